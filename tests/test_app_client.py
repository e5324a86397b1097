"""Drive the whole "Try it yourself" flow through gradio_client (the app's API) against one launched app on the
scripted LM from tests/scripted.py (injected through ``build_app(lm_factory=...)``). The real model runs in the
newcomer browser test (tests/test_app_newcomer.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file

from components import studio
from synth.insights.population import DEFAULT_SAMPLE, SharedPopulation
from synth.store import PersonaStore
from tests.insights_doubles import topic_pipeline
from tests.scripted import scripted_lm
from tests.studio_browser import free_port


def launch_app(lm_factory, data_dir: Path, fast_insights: bool = True):
    """The studio on a free port, its store under ``data_dir``; ``fast_insights`` analyses the population with
    topic embeddings instead of MiniLM (the try tab's tests do not look at it)."""
    settings = studio.StudioSettings(store_path=data_dir / "personas.sqlite")
    population = None
    if fast_insights:
        population = SharedPopulation(PersonaStore(settings.store_path), DEFAULT_SAMPLE,
                                      lambda: topic_pipeline(n_resamples=0))
    demo, model = studio.build_app(lm_factory=lm_factory, settings=settings, population=population)
    model.start()
    port = free_port()
    studio.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    return demo, model, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def scripted_app(data_dir):
    demo, _, url = launch_app(lambda: scripted_lm()[0], data_dir)
    yield url
    demo.close()


def label(client: Client, n: int) -> str:
    progress = ""
    for i in range(n):
        progress = client.predict(api_name="/label_left" if i % 2 else "/label_right")[0]
    return progress


def test_ask_your_own_prompt_puts_the_models_two_drafts_up_for_labeling(scripted_app):
    client = Client(scripted_app, verbose=False)
    client.predict(api_name="/start_session")
    cleared, _, _, prompt, left, right, _, shown = client.predict("How should I learn to cook?",
                                                                        api_name="/ask_own")
    assert cleared == "" and "How should I learn to cook?" in prompt and shown.startswith("own-")
    assert {"compact" in left, "compact" in right} == {True, False}  # both drafts shown, on random sides
    assert label(client, 1).startswith("1 labeled")


def test_label_skip_undo_and_the_pair_id_sent_with_a_click(scripted_app):
    client = Client(scripted_app, verbose=False)
    progress, prompt, left, right, _, shown = client.predict(api_name="/start_session")
    assert progress.startswith("0 labeled, at least 5 needed, up to 15 useful")
    assert prompt and left and right and shown
    assert client.predict(shown, api_name="/label_left")[0].startswith("1 labeled")
    again = client.predict(shown, api_name="/label_left")  # the same shown pair again: counted once
    assert again[0].startswith("1 labeled") and "not counted again" in again[0]
    assert label(client, 1).startswith("2 labeled")
    skipped = client.predict(api_name="/label_skip")
    assert skipped[0].startswith("2 labeled") and skipped[1] != prompt
    assert client.predict(api_name="/label_undo")[0].startswith("2 labeled")  # undoes the skip
    assert client.predict(api_name="/label_undo")[0].startswith("1 labeled")


def test_two_sessions_never_share_labels(scripted_app):
    first, second = Client(scripted_app, verbose=False), Client(scripted_app, verbose=False)
    first.predict(api_name="/start_session")
    second.predict(api_name="/start_session")
    assert label(first, 3).startswith("3 labeled")
    assert second.predict(api_name="/label_skip")[0].startswith("0 labeled")


def test_full_flow_quick_fit_persona_demos_and_judge(scripted_app, data_dir):
    client = Client(scripted_app, verbose=False)
    client.predict(api_name="/start_session")
    assert "Label at least 5 pairs first" in client.predict("Quick", False, False, api_name="/run_fit")[1]
    assert label(client, 6).startswith("6 labeled")

    job = client.submit("Quick", True, False, api_name="/run_fit")
    job.result(timeout=120)
    updates = job.outputs()
    assert len(updates) > 5  # events streamed one by one, not only the final state
    run_progress, run_log, persona, demos, judge_prompt, generation_prompt, artifact_path, *_ = updates[-2]
    assert "Finished" in run_progress
    assert "pair 1: judge said" in run_log and ("✓ kept" in run_log or "✗ rejected" in run_log)
    assert "candidate 0" in run_log and "Persona written" in run_log
    assert "The user prefers short replies." in persona and 'id="persona-card"' in persona
    assert "### system" in judge_prompt and "The user prefers short replies." in generation_prompt
    artifact = json.loads(Path(artifact_path).read_text(encoding="utf-8"))
    assert artifact["persona"] == "The user prefers short replies."
    assert f'Chose candidate {artifact["chosen"]["demos"]}: {len(artifact["demos"])} demos' in run_log
    assert ("Demo 1" in demos) if artifact["demos"] else ("No demos chosen" in demos)
    assert "joined the population anonymously" in updates[-1][-1]
    contributed = [record for record in PersonaStore(data_dir / "personas.sqlite").list(sources=["demo"])
                   if record.user_id in updates[-1][-1]]
    assert len(contributed) == 1 and contributed[0].persona == "The user prefers short replies."
    assert contributed[0].user_id in updates[-1][-1] and contributed[0].evidence is None

    verdicts = client.predict("Which is better?", "Short.", "A much longer reply that goes on and on.",
                              api_name="/test_judge")
    assert "Your judge" in verdicts and "Default judge" in verdicts and "prefers A" in verdicts


def test_import_export_and_reload(scripted_app, tmp_path):
    client = Client(scripted_app, verbose=False)
    client.predict(api_name="/start_session")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": [{"role": "user", "content": "hi"}], '
                   '"chosen": {"role": "assistant", "content": "a"}}\n')
    message = client.predict(handle_file(str(bad)), api_name="/import_pairs")[0]
    assert "bad.jsonl, line 1, field &#x27;rejected&#x27;: missing required field" in message

    good = tmp_path / "good.jsonl"
    rows = [{"context": [{"role": "user", "content": f"Question {i}?"}],
             "chosen": {"role": "assistant", "content": f"Short {i}."},
             "rejected": {"role": "assistant", "content": f"A long and winding answer number {i}, with detail."}}
            for i in range(5)]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    message, progress, *_ = client.predict(handle_file(str(good)), api_name="/import_pairs")
    assert "Imported 5 pair(s)" in message and progress.startswith("5 labeled")
    exported, message = client.predict(api_name="/export_labels")  # an update that also makes the file visible
    assert exported["visible"] is True, exported
    with open(exported["value"], encoding="utf-8") as lines:
        exported_rows = [json.loads(line) for line in lines]
    assert [r["chosen"]["content"] for r in exported_rows] == [f"Short {i}." for i in range(5)]

    job = client.submit("Quick", False, False, api_name="/run_fit")
    job.result(timeout=120)
    artifact_path = job.outputs()[-1][6]
    other = Client(scripted_app, verbose=False)
    other.predict(api_name="/start_session")
    persona = other.predict(handle_file(artifact_path), api_name="/reload_artifact")[0]
    assert "The user prefers short replies." in persona
