"""The "Try it yourself" handlers called directly, without a server: a scripted LM behind a real ModelHandle."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import gradio as gr
import pytest

from components import try_handlers as on
from components.labeling import BankPair, LabelSession
from components.model_handle import ModelHandle
from tests.scripted import PERSONA, scripted_lm

BANK = [BankPair(f"p{i}", "habits", "short vs long", f"How do I get better at habit {i}?",
                 (f"Short tip {i}.", f"A long and detailed plan for habit {i}, with steps, examples and caveats."))
        for i in range(8)]
SKIP = gr.skip()


@pytest.fixture(scope="module")
def model() -> ModelHandle:
    handle = ModelHandle(lambda: scripted_lm()[0]).start()
    handle.get(timeout=60)
    return handle


def labeled_session(n: int) -> LabelSession:
    session = LabelSession.new(BANK, seed=1)
    for _ in range(n):
        session.choose("left")
    return session


class Contributions:
    """A ``contribute`` function that remembers what it was given."""

    def __init__(self):
        self.artifacts: list[dict] = []

    def __call__(self, artifact: dict) -> str:
        self.artifacts.append(artifact)
        return "Joined <the population>."


@pytest.fixture(scope="module")
def fitted(model) -> tuple[LabelSession, list[tuple], Contributions]:
    """One quick fit through ``run_fit`` with the opt-in ticked, shared by the tests that read its outputs."""
    session, contributions = labeled_session(6), Contributions()
    updates = list(on.run_fit(model, contributions, session, "Quick", True))
    return session, updates, contributions


def test_every_handler_refuses_a_session_that_never_started(model):
    calls = [lambda: on.label("left", None), lambda: on.ask_own(model, None, "hi"),
             lambda: on.import_pairs(None, "x.jsonl"), lambda: on.export_labels(None),
             lambda: next(on.run_fit(model, None, None, "Quick", False)), lambda: on.cancel_fit(None),
             lambda: on.reload_artifact(None, "a.json"), lambda: on.opt_in(None, None, True),
             lambda: on.test_judge(model, None, "p", "a", "b")]
    for call in calls:
        with pytest.raises(gr.Error, match="has not started"):
            call()


def test_start_session_shows_the_first_pair_and_no_labels():
    session, progress, prompt, left, right, labels = on.start_session(BANK)
    assert progress.startswith("0 labeled, at least 5 needed")
    assert session.current.pair.prompt in prompt
    assert {session.current.left in left, session.current.right in right} == {True}
    assert "No labels yet" in labels


def test_label_skip_and_undo_move_through_the_queue():
    session = LabelSession.new(BANK, seed=3)
    first = session.current
    progress, *_ = on.label("right", session)
    assert progress.startswith("1 labeled") and session.labels[0].pair.chosen.content == first.right
    second = session.current
    progress, prompt, *_ = on.label("skip", session)
    assert progress.startswith("1 labeled") and session.queue[-1] == second and second.pair.prompt not in prompt
    on.label("undo", session)
    assert session.current == second
    progress, *_ = on.label("undo", session)
    assert progress.startswith("0 labeled") and session.current == first


def test_labeling_with_no_pair_left_changes_nothing():
    session = LabelSession.new(BANK[:1], seed=0)
    on.label("left", session)
    progress, prompt, left, right, _ = on.label("left", session)
    assert progress.startswith("1 labeled") and "No pairs left" in prompt and left == right == ""
    assert on.label("skip", session)[0].startswith("1 labeled")


def test_ask_own_puts_two_drafts_on_screen_and_clears_the_box(model):
    session = LabelSession.new(BANK, seed=0)
    cleared, _, prompt, left, right, _ = on.ask_own(model, session, "  How should I learn to cook?  ")
    assert cleared == "" and "How should I learn to cook?" in prompt
    assert {"compact" in left, "compact" in right} == {True, False}
    assert session.current.pair.id.startswith("own-")
    with pytest.raises(gr.Error, match="write a prompt first"):
        on.ask_own(model, session, "   ")


def test_model_bound_handlers_say_when_the_model_is_loading_or_failed():
    release = threading.Event()
    loading = ModelHandle(lambda: release.wait() and None).start()
    with pytest.raises(gr.Error, match="still loading"):
        on.ready_lm(loading)
    release.set()

    def broken():
        raise OSError("weights not found")

    failed = ModelHandle(broken).start()
    statuses = list(on.wait_for_model(failed))
    assert len(statuses) == 2 and "failed to load: weights not found" in statuses[-1]
    with pytest.raises(gr.Error, match="failed to load: weights not found"):
        on.ask_own(failed, LabelSession.new(BANK, seed=0), "a prompt")


def test_wait_for_model_reports_the_loaded_model(model):
    assert "local/scripted" in list(on.wait_for_model(model))[-1]


def test_import_adds_labels_and_a_bad_file_names_line_and_field(tmp_path):
    session = LabelSession.new(BANK, seed=0)
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"context": [{"role": "user", "content": f"Q{i}?"}],
                                        "chosen": {"role": "assistant", "content": f"Short {i}."},
                                        "rejected": {"role": "assistant", "content": f"Long answer {i}."}}) + "\n"
                            for i in range(3)), encoding="utf-8")
    message, progress, *_ = on.import_pairs(session, str(good))
    assert "Imported 3 pair(s) from good.jsonl" in message and progress.startswith("3 labeled")
    assert [label.source for label in session.labels] == ["import"] * 3

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": [{"role": "user", "content": "hi"}], "chosen": {"role": "assistant", '
                   '"content": "a"}}\n', encoding="utf-8")
    message, progress, *_ = on.import_pairs(session, str(bad))
    assert "notice error" in message and "bad.jsonl, line 1, field &#x27;rejected&#x27;" in message
    assert progress.startswith("3 labeled")

    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    assert "empty.jsonl: no preference pairs found" in on.import_pairs(session, str(empty))[0]


def test_export_writes_the_labels_in_the_official_row_format():
    with pytest.raises(gr.Error, match="label at least one pair"):
        on.export_labels(LabelSession.new(BANK, seed=0))
    session = labeled_session(2)
    exported = on.export_labels(session)
    assert exported.visible is True
    rows = [json.loads(line) for line in Path(exported.value["path"]).read_text(encoding="utf-8").splitlines()]
    assert [row["chosen"]["content"] for row in rows] == [label.pair.chosen.content for label in session.labels]


def test_run_fit_needs_five_labels(model):
    with pytest.raises(gr.Error, match=r"label at least 5 pairs first \(4 so far\)"):
        next(on.run_fit(model, None, labeled_session(4), "Quick", False))


def test_run_fit_streams_events_then_shows_the_judge_and_contributes_once(fitted):
    session, updates, contributions = fitted
    first, *middle, final = updates
    assert isinstance(first[2], gr.Button) and first[2].interactive is False  # Start disabled while it runs
    assert first[3:] == (SKIP,) * (on.RESULT_VIEWS + 1)
    assert middle and all(update[3:] == (SKIP,) * (on.RESULT_VIEWS + 1) for update in middle)
    progress, log, button, persona, demos, judge_prompt, generation_prompt, artifact_path, message = final
    assert "Finished" in progress and "Persona written" in log and button.interactive is True
    assert PERSONA in persona and "### system" in judge_prompt and PERSONA in generation_prompt
    artifact = json.loads(Path(artifact_path).read_text(encoding="utf-8"))
    assert artifact["persona"] == PERSONA
    assert ("Demo 1" in demos) if artifact["demos"] else ("No demos chosen" in demos)
    assert "Joined &lt;the population&gt;." in message  # the contributor's message, escaped
    assert session.fitted is not None and session.contributed is session.fitted
    assert len(contributions.artifacts) == 1 and contributions.artifacts[0]["persona"] == PERSONA
    assert on.opt_in(contributions, session, True) == '<div class="notice ok">Already added.</div>'
    assert len(contributions.artifacts) == 1


def test_run_fit_without_opt_in_leaves_the_message_alone(model):
    session = labeled_session(5)
    final = list(on.run_fit(model, None, session, "Quick", False))[-1]
    assert final[-1] == SKIP and session.fitted is not None and session.contributed is None


def test_cancel_stops_the_run_and_keeps_nothing(model):
    session = labeled_session(6)
    updates = on.run_fit(model, None, session, "Quick", False)
    next(updates)
    on.cancel_fit(session)
    final = list(updates)[-1]
    assert "Cancelled: nothing was kept" in final[1] and final[2].interactive is True
    assert final[3:] == (SKIP,) * (on.RESULT_VIEWS + 1) and session.fitted is None


def test_a_failing_run_is_reported_in_the_log_and_the_page_stays_usable(model, monkeypatch):
    def explode(self, pairs, cancel=None):
        raise RuntimeError("engine fell over")
        yield

    monkeypatch.setattr(on.SynthesizeMe, "fit_events", explode)
    session = labeled_session(5)
    final = list(on.run_fit(model, None, session, "Quick", False))[-1]
    assert "The run failed: engine fell over" in final[1] and final[2].interactive is True
    assert session.fitted is None


def test_opt_in_messages_before_a_fit_without_a_store_and_when_cleared():
    session = labeled_session(1)
    assert "once a run finishes" in on.opt_in(Contributions(), session, True)
    assert on.opt_in(Contributions(), session, False) == ""
    session.fitted = object()
    assert "not available in this deployment" in on.opt_in(None, session, True)


def test_reload_makes_a_saved_artifact_the_sessions_judge(fitted, tmp_path):
    artifact_path = fitted[1][-1][7]
    session = LabelSession.new(BANK, seed=0)
    persona, *_ = on.reload_artifact(session, artifact_path)
    assert PERSONA in persona and session.fitted.get_persona() == PERSONA
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    with pytest.raises(gr.Error) as error:
        on.reload_artifact(session, str(broken))
    assert "broken.json" in str(error.value) and str(tmp_path) not in str(error.value)  # no server paths shown


def test_fill_test_pair_copies_a_bank_pair():
    assert on.fill_test_pair(BANK, None) == (SKIP, SKIP, SKIP)
    assert on.fill_test_pair(BANK, "p2") == (BANK[2].prompt, *BANK[2].responses)


def test_test_judge_compares_the_visitors_judge_with_the_default(model, fitted):
    with pytest.raises(gr.Error, match="run SynthesizeMe or reload an artifact first"):
        on.test_judge(model, LabelSession.new(BANK, seed=0), "p", "a", "b")
    session = fitted[0]
    with pytest.raises(gr.Error, match="fill in the prompt and both replies"):
        on.test_judge(model, session, "Which?", " ", "b")
    verdicts = on.test_judge(model, session, "Which is better?", "Short.", "A much longer reply that goes on.")
    assert "Your judge" in verdicts and "Default judge" in verdicts and "prefers A" in verdicts
