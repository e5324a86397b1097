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

from synth.store import Evidence, PersonaRecord, PersonaStore, new_deletion_code, new_user_id

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


def test_add_get_list_delete_and_evidence_round_trip(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "db" / "personas.sqlite")
    evidence = Evidence(("chose the shorter answer",), ({"prompt": "Q?", "chosen": "a", "rejected": "b"},))
    store.add(
        record(
            "a",
            statements=("Likes tea.",),
            model="gemma",
            evidence=evidence,
            ratings={"Likes tea.": "me"},
            source="demo",
        )
    )
    store.add(record("b", consent=False, source="import"))
    got = store.get("a")
    assert (
        got is not None
        and got.evidence == evidence
        and got.ratings == {"Likes tea.": "me"}
        and got.statements == ("Likes tea.",)
        and got.model == "gemma"
    )
    assert got.to_persona().statements == ("Likes tea.",)
    assert [r.user_id for r in store.list()] == ["a", "b"]
    assert store.list()[0].evidence is None  # listing never reads evidence
    assert [r.user_id for r in store.list(consented_only=True)] == ["a"]
    assert [r.user_id for r in store.list(sources=["import"])] == ["b"]
    assert store.count() == 2 and store.count(consented_only=True) == 1
    store.add(
        record("a", consent=True, source="demo")
    )  # a user's newer persona replaces the old one
    assert store.count() == 2 and store.get("a").evidence is None
    assert store.delete("a") is True and store.delete("a") is False
    assert store.get("a") is None and store.count() == 1


def test_a_deletion_code_removes_its_record_and_only_its_hash_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "personas.sqlite"
    store = PersonaStore(path)
    code = new_deletion_code()
    store.add(record("mine", source="demo"), deletion_code=code)
    store.add(record("other", source="demo"), deletion_code=new_deletion_code())
    assert all(code.encode() not in file.read_bytes() for file in tmp_path.iterdir())
    assert store.delete_with_code("wrong") is False and store.delete_with_code("  ") is False
    assert store.delete_with_code(code) is True and store.get("mine") is None and store.get("other")
    assert store.delete_with_code(code) is False


def test_a_bulk_write_over_a_contributors_record_keeps_their_deletion_code(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "personas.sqlite")
    code = new_deletion_code()
    store.add(record("mine", source="demo"), deletion_code=code)
    store.add_many([record("mine", source="demo"), record("other", source="demo")])
    assert store.delete_with_code(code) is True and store.get("mine") is None


def test_persona_writes_raise_the_revision_and_ratings_only_the_ratings_revision(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "personas.sqlite")
    revisions = [(store.revision(), store.ratings_revision())]
    store.add(record("a"))
    revisions.append((store.revision(), store.ratings_revision()))
    store.set_ratings("a", {"Persona of a.": "not_me"})
    revisions.append((store.revision(), store.ratings_revision()))
    store.delete("a")
    revisions.append((store.revision(), store.ratings_revision()))
    assert revisions == [(0, 0), (1, 0), (1, 1), (2, 1)]
    with pytest.raises(ValueError, match="ratings must be one of"):
        store.set_ratings("a", {"x": "maybe"})
    assert (store.revision(), store.ratings_revision()) == revisions[-1]  # a refused write changes nothing
    assert store.set_ratings("nobody", {}) is False


def test_ratings_are_read_per_user_and_only_with_consent_when_asked(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "personas.sqlite")
    store.add(record("a"))
    store.add(record("b", consent=False))
    store.add(record("c"))
    store.set_ratings("a", {"Persona of a.": "me"})
    store.set_ratings("b", {"Persona of b.": "not_me"})
    assert store.ratings() == {"a": {"Persona of a.": "me"}, "b": {"Persona of b.": "not_me"}}
    assert store.ratings(consented_only=True) == {"a": {"Persona of a.": "me"}}


def test_a_version_1_store_is_upgraded_and_its_unconsented_artifacts_dropped(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as connection:
        connection.execute(
            "CREATE TABLE personas (user_id TEXT PRIMARY KEY, persona TEXT NOT NULL, statements TEXT NOT NULL "
            "DEFAULT '[]', model TEXT NOT NULL DEFAULT '', source TEXT NOT NULL, created_at TEXT NOT NULL, consent "
            "INTEGER NOT NULL, artifact TEXT)")
        connection.execute("INSERT INTO personas VALUES ('u-1', 'Likes tea.', '[]', 'm', 'demo', 't', 1, "
                           "'{\"pairs\": {\"train\": [{\"email\": \"x@example.com\"}]}}')")
        connection.execute("PRAGMA user_version=1")
    store = PersonaStore(path)
    assert store.get("u-1").persona == "Likes tea." and store.get("u-1").evidence is None
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(personas)")]
    assert "artifact" not in columns and {"evidence", "ratings", "deletion_hash"} <= set(columns)
    assert PersonaStore(path).count() == 1  # opening again changes nothing


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
