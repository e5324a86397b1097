"""Persona store: CRUD, consent filter, concurrent writers (threads and processes), durability under SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from synth.store import PersonaRecord, PersonaStore, new_user_id

ROOT = Path(__file__).resolve().parent.parent


def record(
    user_id: str, consent: bool = True, source: str = "batch", **kwargs
) -> PersonaRecord:
    return PersonaRecord(
        user_id=user_id,
        persona=f"Persona of {user_id}.",
        source=source,
        consent=consent,
        **kwargs,
    )


def test_add_get_list_delete_and_artifact_round_trip(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "db" / "personas.sqlite")
    artifact = {
        "persona": "Likes tea.",
        "traces": [{"reasoning": "chose the shorter answer", "kept": True}],
    }
    store.add(
        record(
            "a",
            statements=("Likes tea.",),
            model="gemma",
            artifact=artifact,
            source="demo",
        )
    )
    store.add(record("b", consent=False, source="import"))
    got = store.get("a")
    assert (
        got is not None
        and got.artifact == artifact
        and got.statements == ("Likes tea.",)
        and got.model == "gemma"
    )
    assert got.to_persona().statements == ("Likes tea.",)
    assert [r.user_id for r in store.list()] == ["a", "b"]
    assert [r.user_id for r in store.list(consented_only=True)] == ["a"]
    assert [r.user_id for r in store.list(sources=["import"])] == ["b"]
    assert store.count() == 2 and store.count(consented_only=True) == 1
    store.add(
        record("a", consent=True, source="demo")
    )  # a user's newer persona replaces the old one
    assert store.count() == 2 and store.get("a").artifact is None
    assert store.delete("a") is True and store.delete("a") is False
    assert store.get("a") is None and store.count() == 1


def test_journal_is_wal_and_bad_records_are_rejected_whole(tmp_path: Path) -> None:
    path = tmp_path / "personas.sqlite"
    store = PersonaStore(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ValueError, match="source must be one of"):
        store.add_many([record("ok"), record("bad", source="web")])
    with pytest.raises(ValueError, match="must not be empty"):
        store.add(PersonaRecord(user_id="x", persona="  ", source="demo", consent=True))
    assert store.count() == 0
    assert new_user_id() != new_user_id() and new_user_id().startswith("u-")


def test_concurrent_thread_writers_lose_nothing(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "personas.sqlite")

    def write(thread: int) -> None:
        for i in range(40):
            store.add(record(f"t{thread}-{i}"))

    threads = [threading.Thread(target=write, args=(t,)) for t in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.count() == 240


def _process_writer(path: str, prefix: str, n: int) -> None:
    store = PersonaStore(path)
    for i in range(n):
        store.add(record(f"{prefix}-{i}"))


def test_concurrent_process_writers_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "personas.sqlite")
    PersonaStore(path)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_process_writer, args=(path, f"p{i}", 30))
        for i in range(3)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert PersonaStore(path).count() == 90


def test_committed_rows_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "personas.sqlite"
    writer = textwrap.dedent(
        f"""
        import sys
        from synth.store import PersonaRecord, PersonaStore
        store = PersonaStore({str(path)!r})
        i = 0
        while True:
            store.add(PersonaRecord(user_id=f"k-{{i}}", persona="Persona " + "x" * 2000, source="batch", consent=True))
            print(i, flush=True)
            i += 1
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", writer],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    acknowledged = -1
    deadline = time.monotonic() + 60
    while acknowledged < 50 and time.monotonic() < deadline:
        acknowledged = int(process.stdout.readline())
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert acknowledged >= 50

    reopened = PersonaStore(path)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    present = {r.user_id for r in reopened.list()}
    assert {
        f"k-{i}" for i in range(acknowledged + 1)
    } <= present  # every acknowledged commit is there
    assert (
        len(present) <= acknowledged + 2
    )  # at most the one write in flight when killed
