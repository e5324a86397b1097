"""A public studio: the per-visitor limits from the environment, the model gate's line, and what it keeps on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from components.limits import GateRefused, Limits, ModelGate
from components.studio import GRADIO_CACHE, StudioSettings, build_app, launch
from synth.insights.population import SharedPopulation
from synth.store import PersonaStore
from tests.insights_doubles import topic_pipeline
from tests.scripted import scripted_lm


def test_limits_come_from_the_environment_with_clear_errors(monkeypatch):
    assert Limits.from_env() == Limits()
    monkeypatch.setenv("SYNTH_MAX_PAIRS", "12")
    monkeypatch.setenv("SYNTH_MAX_UPLOAD_MB", "3")
    limits = Limits.from_env()
    assert limits.max_pairs == 12 and limits.max_upload_bytes == 3 * 1024 * 1024
    monkeypatch.setenv("SYNTH_MAX_FIELD_CHARS", "lots")
    with pytest.raises(ValueError, match=r"\$SYNTH_MAX_FIELD_CHARS must be a whole number, got 'lots'"):
        Limits.from_env()
    monkeypatch.setenv("SYNTH_MAX_FIELD_CHARS", "0")
    with pytest.raises(ValueError, match="at least 1"):
        Limits.from_env()


def test_every_limit_is_in_the_readmes_configuration_table():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    for name, variable in Limits.ENVIRONMENT.items():
        assert f"| `{variable}` | `{getattr(Limits(), name)}` |" in readme, variable


def test_the_upload_limit_reaches_gradio_and_nothing_of_a_visitor_stays_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_MAX_UPLOAD_MB", "1")
    settings = StudioSettings.from_env()
    store_path = tmp_path / "s.sqlite"
    population = SharedPopulation(PersonaStore(store_path), None, topic_pipeline)  # no sample: nothing to embed
    demo, model = build_app(lambda: scripted_lm()[0].copy(cache=True), population=population,
                            settings=StudioSettings(store_path=store_path, limits=settings.limits))
    launch(demo, prevent_thread_lock=True, quiet=True, server_name="127.0.0.1")
    try:
        assert demo.max_file_size == 1024 * 1024
        assert model.start().get(timeout=60).cache is False  # DSPy's response cache off, whatever the factory said
        assert demo.delete_cache == GRADIO_CACHE  # Gradio's copies of uploads and downloads are deleted
    finally:
        demo.close()


def test_the_store_goes_to_the_spaces_persistent_data_folder_when_there_is_one(monkeypatch):
    for variable in ("SYNTH_DATA_DIR", "SYNTH_STORE"):
        monkeypatch.delenv(variable, raising=False)
    is_dir, access = Path.is_dir, os.access
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) == "/data" or access(path, mode))
    monkeypatch.setattr(Path, "is_dir", lambda self: str(self) == "/data" or is_dir(self))
    assert StudioSettings.from_env().store_path == Path("/data/synth/personas.sqlite")
    monkeypatch.setattr(Path, "is_dir", lambda self: str(self) != "/data" and is_dir(self))
    assert StudioSettings.from_env().store_path == Path.home() / ".local" / "share" / "synth" / "personas.sqlite"


def test_the_gate_serves_in_order_and_caps_visitors_clients_and_the_line():
    gate = ModelGate(capacity=1, per_client=2, max_line=2)
    first = gate.admit("v1", "a")
    second = gate.admit("v2", "a")
    assert first.wait(0) and not second.wait(0) and second.ahead == 1
    with pytest.raises(GateRefused, match="already have a model action"):
        gate.admit("v1", "b")
    with pytest.raises(GateRefused, match="from your address"):
        gate.admit("v3", "a")
    third = gate.admit("v3", "b")
    with pytest.raises(GateRefused, match="The studio is busy: 2 model actions are waiting"):
        gate.admit("v4", "c")
    started = threading.Event()

    def run_second():
        second.wait(10)
        started.set()

    waiter = threading.Thread(target=run_second)
    waiter.start()
    first.release()
    assert started.wait(10) and third.ahead == 1
    waiter.join()
    gate.set_capacity(2)
    assert third.wait(0)  # more slots once the device is known
    second.release()
    third.release()
    assert gate.admit("v1", "a").wait(0)


def test_model_libraries_are_imported_before_any_background_thread_starts(tmp_path):
    """Two threads resolving transformers' lazy classes at once can deadlock the import locks and leave the model
    unloaded ("cannot import name 'AutoModelForCausalLM'"); the studio imports them before starting threads."""
    script = f"""
import sys, threading
from components.studio import StudioSettings, build_app
from synth.insights.population import SharedPopulation
from synth.store import PersonaStore
from tests.insights_doubles import topic_pipeline
from tests.scripted import scripted_lm

seen = []
start = threading.Thread.start
def recording_start(thread):
    seen.append(("sentence_transformers" in sys.modules, "transformers.models.auto.modeling_auto" in sys.modules))
    return start(thread)
threading.Thread.start = recording_start
store = PersonaStore({str(tmp_path / "s.sqlite")!r})
population = SharedPopulation(store, None, topic_pipeline)
demo, model = build_app(lambda: scripted_lm()[0], population=population,
                        settings=StudioSettings(store_path={str(tmp_path / "s.sqlite")!r}))
model.start().get(timeout=60)
assert seen and all(all(flags) for flags in seen), seen
print("ok", len(seen))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0 and done.stdout.startswith("ok"), done.stderr[-3000:]
