"""The "Try it yourself" handlers called directly, without a server: a scripted LM behind a real ModelHandle, the
real gate, visitors registry, contributor and store. Several tests are hostile visitors (issue 14)."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import dspy
import gradio as gr
import pytest

from components import try_handlers as on
from components.contribute import Contributor
from components.labeling import BankPair, LabelSession
from components.limits import Limits, ModelGate
from components.model_handle import ModelHandle
from components.studio import device_tasks
from components.visitors import Visitors
from synth.lm.prompts import request_messages
from synth.store import PersonaStore
from tests.scripted import PERSONA, ScriptedEngine, scripted_lm

BANK = [BankPair(f"p{i}", "habits", "short vs long", f"How do I get better at habit {i}?",
                 (f"Short tip {i}.", f"A long and detailed plan for habit {i}, with steps, examples and caveats."))
        for i in range(8)]
SKIP = gr.skip()
EMAIL = "someone@example.com"


class RecordingEngine(ScriptedEngine):
    """The scripted engine, remembering every request's max_tokens and prompt size."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes: list[tuple[int, int]] = []

    def complete(self, request):
        size = sum(len(message["content"]) for message in request_messages(request))
        self.sizes.append((request.config.max_tokens or 0, size))
        return super().complete(request)

    def _score_choices(self, messages, assistant_prefix, choices):
        self.sizes.append((0, sum(len(message["content"]) for message in messages)))
        return super()._score_choices(messages, assistant_prefix, choices)


def make_parts(tmp_path: Path, model: ModelHandle, limits: Limits | None = None, gate: ModelGate | None = None,
               store: PersonaStore | None = None) -> on.TryParts:
    visitors = Visitors(tmp_path / "visitors")
    store = store or PersonaStore(tmp_path / "personas.sqlite")
    return on.TryParts(model=model, gate=gate or ModelGate(capacity=2, per_client=2), visitors=visitors,
                       limits=limits or Limits(), bank=BANK, device=device_tasks(model, visitors, 60),
                       contributor=Contributor(store, BANK))


@pytest.fixture(scope="module")
def model() -> ModelHandle:
    handle = ModelHandle(lambda: scripted_lm()[0]).start()
    handle.get(timeout=60)
    return handle


@pytest.fixture
def parts(tmp_path, model) -> on.TryParts:
    return make_parts(tmp_path, model)


def labeled_session(parts: on.TryParts, n: int) -> LabelSession:
    session = LabelSession.new(parts.bank, seed=1)
    parts.visitors.join(session, None)
    for _ in range(n):
        session.choose("left")
    return session


def run(generator) -> list[tuple]:
    return list(generator)


def store_of(parts: on.TryParts) -> PersonaStore:
    return parts.contributor.store


@pytest.fixture
def fitted(parts) -> tuple[LabelSession, list[tuple]]:
    """One quick fit through ``run_fit`` with the opt-in ticked (persona only)."""
    session = labeled_session(parts, 6)
    return session, run(on.run_fit(parts, session, "Quick", True, False))


# ---- sessions and labeling ------------------------------------------------------------------------------------
def test_every_handler_answers_a_missing_session_with_a_sentence(parts):
    calls = [lambda: on.label(parts, "left", None), lambda: run(on.ask_own(parts, None, "hi"))[-1],
             lambda: on.import_pairs(parts, None, "x.jsonl"), lambda: on.export_labels(parts, None),
             lambda: run(on.run_fit(parts, None, "Quick", False, False))[-1],
             lambda: on.reload_artifact(parts, None, "a.json"), lambda: on.opt_in(parts, None, True, False),
             lambda: run(on.test_judge(parts, None, "p", "a", "b"))[-1],
             lambda: run(on.answer_twice(parts, None, "p"))[-1], lambda: on.rate(parts, 0, None, "me", False)]
    for call in calls:
        result = call()
        assert "reload the page" in (result if isinstance(result, str) else " ".join(map(str, result)))
    on.cancel(None)  # nothing to cancel, nothing raised


def test_start_session_shows_the_first_pair_and_its_id(parts):
    session, progress, prompt, left, right, labels, shown = on.start_session(parts, client="1.2.3.4")
    assert progress.startswith("0 labeled, at least 5 needed") and session.client == "1.2.3.4"
    assert session.current.pair.prompt in prompt and shown == session.current.pair.id
    assert {session.current.left in left, session.current.right in right} == {True}
    assert "No labels yet" in labels


def test_a_click_labels_the_pair_it_was_shown_with_and_counts_once(parts):
    session = LabelSession.new(BANK, seed=3)
    first = session.current
    progress, *_ = on.label(parts, "right", session, first.pair.id)
    assert progress.startswith("1 labeled") and session.labels[0].pair.chosen.content == first.right
    again = on.label(parts, "right", session, first.pair.id)  # a second click sent with the same pair on screen
    assert again[0].startswith("1 labeled") and "not counted again" in again[0]
    second = session.current
    on.label(parts, "skip", session, second.pair.id)
    assert session.current != second and session.queue[-1] == second
    on.label(parts, "left", session, second.pair.id)  # the skipped pair, answered as it was shown
    assert session.labels[-1].pair.chosen.content == second.left and len(session.labels) == 2


def test_label_skip_and_undo_move_through_the_queue_and_undo_keeps_imports(parts, tmp_path):
    session = LabelSession.new(BANK, seed=3)
    first = session.current
    on.label(parts, "right", session)
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(_row(0)) + "\n", encoding="utf-8")
    on.import_pairs(parts, session, str(path))
    progress, *_ = on.label(parts, "undo", session)
    assert progress.startswith("1 labeled") and session.current == first
    assert [label.source for label in session.labels] == ["import"]  # the undo took the click, not the import


def test_labels_stop_at_the_session_limit(tmp_path, model):
    parts = make_parts(tmp_path, model, limits=Limits(max_pairs=2))
    session = LabelSession.new(BANK, seed=0)
    on.label(parts, "left", session)
    on.label(parts, "left", session)
    progress, *_ = on.label(parts, "left", session)
    assert progress.startswith("2 labeled") and "the most one visit keeps" in progress


def _row(i: int, **extra) -> dict:
    return {"context": [{"role": "user", "content": f"Q{i}?"}],
            "chosen": {"role": "assistant", "content": f"Short {i}."},
            "rejected": {"role": "assistant", "content": f"Long answer {i}."}, **extra}


def test_import_adds_labels_and_refuses_bad_big_many_long_and_nested_files(tmp_path, model):
    parts = make_parts(tmp_path, model, limits=Limits(max_pairs=4, max_field_chars=50, max_upload_mb=1))
    session = LabelSession.new(BANK, seed=0)
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps(_row(i)) + "\n" for i in range(3)), encoding="utf-8")
    message, progress, *_ = on.import_pairs(parts, session, str(good))
    assert "Imported 3 pair(s) from good.jsonl" in message and progress.startswith("3 labeled")

    cases = {
        "bad.jsonl": ('{"context": [{"role": "user", "content": "hi"}], "chosen": {"role": "assistant", '
                      '"content": "a"}}\n', "bad.jsonl, line 1, field &#x27;rejected&#x27;"),
        "many.jsonl": ("".join(json.dumps(_row(i)) + "\n" for i in range(2)), "room for 1 more"),
        "long.jsonl": (json.dumps(_row(0, chosen={"role": "assistant", "content": "x" * 51})) + "\n",
                       "pair 1, field &#x27;chosen&#x27;: 51 characters"),
        "nested.json": ("[" * 100_000 + "]" * 100_000, "nested.json"),
        "big.jsonl": ("x" * (2**20 + 1), "1.0 MB; this studio takes files up to 1 MB"),
        "binary.jsonl": (b"\xff\xfe\x00", "not UTF-8"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        message, progress, *_ = on.import_pairs(parts, session, str(path))
        assert "notice error" in message and expected in message, (name, message)
        assert progress.startswith("3 labeled")


def test_export_writes_the_labels_in_the_official_row_format(parts):
    _, message = on.export_labels(parts, LabelSession.new(BANK, seed=0))
    assert "Label at least one pair first" in message
    session = labeled_session(parts, 2)
    exported, message = on.export_labels(parts, session)
    assert exported.visible is True and "Exported 2" in message
    path = parts.visitors.folder(session) / "my_labels.jsonl"  # Gradio serves a copy of it, kept for an hour
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [row["chosen"]["content"] for row in rows] == [label.pair.chosen.content for label in session.labels]
    parts.visitors.forget(session)
    assert not path.exists()


# ---- waiting for the model ------------------------------------------------------------------------------------
def test_a_model_action_waits_for_the_load_and_then_runs(tmp_path):
    release = threading.Event()
    loading = ModelHandle(lambda: release.wait() and scripted_lm()[0])
    parts = make_parts(tmp_path, loading)
    session = LabelSession.new(BANK, seed=0)
    updates = on.ask_own(parts, session, "How should I learn to cook?")
    first = next(updates)
    assert "Loading the model" in first[1] and "start by themselves" in first[1]
    release.set()
    final = list(updates)[-1]
    assert final[0] == "" and "Two drafts are on screen" in final[1] and session.current.pair.id.startswith("own-")


def test_a_failed_load_is_a_sentence_not_an_error(tmp_path):
    def broken():
        raise OSError("weights not found")

    failed = ModelHandle(broken).start()
    parts = make_parts(tmp_path, failed)
    statuses = list(on.wait_for_model(failed))
    assert "failed to load (weights not found)" in statuses[-1]
    message = run(on.ask_own(parts, LabelSession.new(BANK, seed=0), "a prompt"))[-1][1]
    assert "failed to load (weights not found)" in message and "SYNTH_MODEL" in message


def test_one_visitor_waits_behind_another_and_never_holds_two_places(tmp_path, model):
    gate = ModelGate(capacity=1, per_client=5)
    parts = make_parts(tmp_path, model, gate=gate)
    first, second = labeled_session(parts, 5), labeled_session(parts, 5)
    held = gate.admit(first.id, "a")
    updates = on.test_judge(parts, second, "p", "a", "b")
    assert "Run SynthesizeMe or reload an artifact first" in next(updates)  # checks before taking a place
    second.fitted = object()
    updates = on.run_fit(parts, second, "Quick", False, False)
    assert "1 visitor(s) ahead of you" in next(updates)[0]
    again = run(on.ask_own(parts, second, "another prompt"))[-1][1]
    assert "already have a model action waiting or running" in again
    held.release()
    assert "Finished" in list(updates)[-1][0]


def test_model_actions_per_session_are_bounded(tmp_path, model):
    parts = make_parts(tmp_path, model, limits=Limits(max_model_events=1))
    session = LabelSession.new(BANK, seed=0)
    run(on.ask_own(parts, session, "First prompt?"))
    message = run(on.ask_own(parts, session, "Second prompt?"))[-1][1]
    assert "run its 1 model actions" in message and "reload the page" in message


# ---- the run -------------------------------------------------------------------------------------------------
def test_run_fit_needs_five_labels(parts):
    final = run(on.run_fit(parts, labeled_session(parts, 4), "Quick", False, False))[-1]
    assert "Label at least 5 pairs first (4 so far)" in final[1]


def test_run_fit_streams_events_then_shows_the_judge(parts, fitted):
    session, updates = fitted
    *streamed, final, joined = updates
    assert streamed[0][2].interactive is False  # Start disabled while it runs
    assert all(update[3:] == (SKIP,) * (on.RESULT_VIEWS + 1) for update in streamed)
    progress, log, button, persona, _demos, judge_prompt, generation_prompt, artifact_path, *rest = final
    radios, fidelity, message = rest[:on.MAX_RATED], rest[on.MAX_RATED], rest[-1]
    assert "Finished" in progress and "Persona written" in log and button.interactive is True
    assert PERSONA in persona and "### system" in judge_prompt and PERSONA in generation_prompt
    assert json.loads(Path(artifact_path).read_text(encoding="utf-8"))["persona"] == PERSONA
    assert radios[0].visible is True and radios[0].label == PERSONA and radios[1].visible is False
    assert "Rate each statement" in fidelity and message == SKIP
    assert joined[:-1] == (SKIP,) * (3 + on.RESULT_VIEWS) and "joined the population anonymously" in joined[-1]
    assert session.fitted_here and session.statements == [PERSONA]


def fit_with_a_private_import(parts: on.TryParts, share_evidence: bool) -> tuple[LabelSession, str]:
    """Five bank labels and one imported pair carrying an e-mail column, fitted with the opt-in ticked; the session
    and the opt-in message."""
    session = labeled_session(parts, 5)
    private = parts.visitors.folder(session) / "private.jsonl"
    private.write_text(json.dumps(_row(9, email=EMAIL)) + "\n", encoding="utf-8")
    on.import_pairs(parts, session, str(private))
    return session, run(on.run_fit(parts, session, "Quick", True, share_evidence))[-1][-1]


def test_a_contribution_stores_the_persona_and_nothing_else_by_default(tmp_path, model):
    parts = make_parts(tmp_path, model)
    session, joined = fit_with_a_private_import(parts, share_evidence=False)
    [record] = store_of(parts).list()
    assert record.persona == PERSONA and record.statements == (PERSONA,) and record.model == "local/scripted"
    assert record.evidence is None and record.ratings == {} and record.created_at
    stored = Path(store_of(parts).path).read_bytes()
    assert EMAIL.encode() not in stored and b"Q9?" not in stored and b"shorter reply" not in stored
    code = session.contribution.deletion_code
    assert record.user_id in joined and code in joined


def test_the_evidence_consent_shares_only_the_banks_pairs_and_their_reasoning(tmp_path, model):
    parts = make_parts(tmp_path, model)
    session, _ = fit_with_a_private_import(parts, share_evidence=True)
    [record] = store_of(parts).list()
    evidence = store_of(parts).get(record.user_id).evidence
    assert evidence.pairs and len(evidence.pairs) == len(evidence.reasoning)
    bank_texts = {(p.prompt, frozenset(p.responses)) for p in BANK}
    assert all((pair["prompt"], frozenset((pair["chosen"], pair["rejected"]))) in bank_texts
               for pair in evidence.pairs)
    stored = Path(store_of(parts).path).read_bytes()
    assert EMAIL.encode() not in stored and b"Q9?" not in stored
    # the consent withdrawn: the record keeps the persona only
    assert "without any reasoning" in on.share_evidence_changed(parts, session, False)
    assert store_of(parts).get(record.user_id).evidence is None


def test_only_a_persona_fitted_here_joins_and_only_once(parts, fitted, tmp_path):
    session, updates = fitted
    assert "already in the population" in on.opt_in(parts, session, True, False)
    run(on.run_fit(parts, session, "Quick", True, False))  # a second fit, box still ticked
    assert store_of(parts).count() == 1
    reloaded = LabelSession.new(BANK, seed=0)
    on.reload_artifact(parts, reloaded, updates[-2][7])
    assert "Only a persona fitted in this visit" in on.opt_in(parts, reloaded, True, False)
    assert store_of(parts).count() == 1


def test_remove_my_persona_deletes_the_record_for_good(parts, fitted):
    session, _ = fitted
    code = session.contribution.deletion_code
    assert "No persona has this deletion code" in on.remove_persona(parts, session, "not-the-code")
    assert "was removed" in on.remove_persona(parts, session, code)
    assert store_of(parts).count() == 0
    on.share_evidence_changed(parts, session, True)  # nothing is written back for a removed persona
    on.rate(parts, 0, session, on.ME, True)
    assert store_of(parts).count() == 0
    assert "You removed your persona" in on.opt_in(parts, session, True, False)


def test_an_empty_persona_is_not_added_and_the_fit_stays_on_screen(tmp_path):
    """Issue 14 item 5: the fit used to vanish and the second tick said "Already added" with nothing stored."""
    lm, _ = scripted_lm(persona="")
    model = ModelHandle(lambda: lm).start()
    parts = make_parts(tmp_path, model)
    session = labeled_session(parts, 5)
    *_, final, joined = run(on.run_fit(parts, session, "Quick", True, False))
    assert "Finished" in final[0] and "no persona" in final[3] and Path(final[7]).exists()
    assert "wrote no persona" in joined[-1] and store_of(parts).count() == 0
    assert "wrote no persona" in on.opt_in(parts, session, True, False)


def test_a_failing_contribution_never_hides_the_fit(tmp_path, model, monkeypatch):
    parts = make_parts(tmp_path, model)

    def disk_full(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(parts.contributor.store, "add", disk_full)
    session = labeled_session(parts, 5)
    *_, final, joined = run(on.run_fit(parts, session, "Quick", True, False))
    assert PERSONA in final[3] and "could not be added (disk full)" in joined[-1]
    assert "results above are unaffected" in joined[-1] and session.contribution is None


def test_cancel_stops_the_run_and_keeps_nothing(parts):
    session = labeled_session(parts, 6)
    updates = on.run_fit(parts, session, "Quick", False, False)
    next(updates)
    on.cancel(session)
    final = list(updates)[-1]
    assert "Cancelled: nothing was kept" in final[1] and final[2].interactive is True
    assert final[3:] == (SKIP,) * (on.RESULT_VIEWS + 1) and session.fitted is None


def test_leaving_the_page_stops_the_visitors_fit(parts):
    session = labeled_session(parts, 6)
    parts.visitors.join(session, "hash-1")
    updates = on.run_fit(parts, session, "Quick", False, False)
    next(updates)
    parts.visitors.leave("hash-1")
    assert session.cancel.is_set() and "Cancelled" in list(updates)[-1][1]


def test_a_failing_run_is_reported_in_words_and_the_page_stays_usable(parts, monkeypatch):
    def explode(self, pairs, cancel=None):
        raise RuntimeError("engine fell over")
        yield

    monkeypatch.setattr(on.device.SynthesizeMe, "fit_events", explode)
    session = labeled_session(parts, 5)
    final = run(on.run_fit(parts, session, "Quick", False, False))[-1]
    assert "The run failed (engine fell over). Press Start to try again" in final[1] and final[2].interactive
    assert session.fitted is None


# ---- reload and test ----------------------------------------------------------------------------------------
def test_reload_makes_a_saved_artifact_the_sessions_judge(parts, fitted, tmp_path):
    artifact_path = fitted[1][-2][7]
    session = LabelSession.new(BANK, seed=0)
    *results, message = on.reload_artifact(parts, session, artifact_path)
    assert PERSONA in results[0] and session.fitted.get_persona() == PERSONA and not session.fitted_here
    assert "Reloaded synthesizeme_artifact.json" in message
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    message = on.reload_artifact(parts, session, str(broken))[-1]
    assert "broken.json" in message and str(tmp_path) not in message  # no server paths shown
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert "nested too deeply" in on.reload_artifact(parts, session, str(nested))[-1]


def test_a_hostile_artifact_cannot_make_the_judge_test_unbounded(tmp_path, fitted):
    """Issue 14 item 1: 50,000,000 reasoning tokens, 10**9 characters per turn and a 3 MB demo in the file."""
    engine = RecordingEngine()
    model = ModelHandle(lambda: dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=256,
                                        cache=False)).start()
    parts = make_parts(tmp_path, model, limits=Limits(max_upload_mb=8))
    artifact = json.loads(Path(fitted[1][-2][7]).read_text(encoding="utf-8"))
    artifact["config"].update(reasoning_tokens=50_000_000, max_turn_chars=10**9, persona_tokens=10**8)
    artifact["demos"] = [{"conversation": "x" * 3_000_000, "first_reply": "a", "second_reply": "b",
                          "reasoning": "r", "preferred": "First"}]
    hostile = tmp_path / "hostile.json"
    hostile.write_text(json.dumps(artifact), encoding="utf-8")
    session = LabelSession.new(BANK, seed=0)
    on.reload_artifact(parts, session, str(hostile))
    verdicts = run(on.test_judge(parts, session, "Which?", "Short.", "A longer reply."))[-1]
    assert "Your judge" in verdicts and engine.sizes
    assert max(tokens for tokens, _ in engine.sizes) <= 256
    assert max(size for _, size in engine.sizes) < 60_000


def test_test_judge_compares_the_visitors_judge_with_the_default(parts, fitted):
    session = fitted[0]
    assert "Fill in the prompt and both replies" in run(on.test_judge(parts, session, "Which?", " ", "b"))[-1]
    long = "x" * (parts.limits.max_field_chars + 1)
    assert "per field" in run(on.test_judge(parts, session, long, "a", "b"))[-1]
    verdicts = run(on.test_judge(parts, session, "Which is better?", "Short.", "A much longer reply that goes."))[-1]
    assert "Your judge" in verdicts and "Default judge" in verdicts and "prefers A" in verdicts


def test_test_judge_can_be_cancelled(parts, fitted):
    session = fitted[0]
    updates = on.test_judge(parts, session, "Which is better?", "Short.", "A much longer reply.")
    assert "reading the pair" in next(updates)
    on.cancel(session)
    assert "Cancelled" in list(updates)[-1]


def test_leaving_the_page_stops_the_judge_test(parts, fitted):
    session = fitted[0]
    parts.visitors.join(session, "hash-judge")
    updates = on.test_judge(parts, session, "Which is better?", "Short.", "A much longer reply.")
    assert "reading the pair" in next(updates)
    parts.visitors.leave("hash-judge")
    final = list(updates)[-1]
    assert session.cancel.is_set() and "Cancelled" in final and "Default judge" not in final
    assert not (parts.visitors.root / session.id).exists()  # the visitor's files went with them


def test_fill_test_pair_copies_a_bank_pair():
    assert on.fill_test_pair(BANK, None) == (SKIP, SKIP, SKIP) == on.fill_test_pair(BANK, "no-such-pair")
    assert on.fill_test_pair(BANK, "p2") == (BANK[2].prompt, *BANK[2].responses)


# ---- is this you? and what your persona changes --------------------------------------------------------------
def test_ratings_give_the_fidelity_and_are_stored_only_with_consent(parts, fitted):
    session, _ = fitted
    line = on.rate(parts, 0, session, on.ME, False)
    assert "100%" in line and "1 of 1 decided" in line
    record = store_of(parts).get(session.contribution.user_id)
    assert record.ratings == {}  # contributed without the evidence consent
    on.share_evidence_changed(parts, session, True)
    assert store_of(parts).get(session.contribution.user_id).ratings == {PERSONA: on.ME}
    revision = store_of(parts).revision()
    line = on.rate(parts, 0, session, on.NOT_ME, True)
    assert "0%" in line and store_of(parts).get(session.contribution.user_id).ratings == {PERSONA: on.NOT_ME}
    assert store_of(parts).revision() == revision  # an answer re-fits no population: only the ratings moved
    assert on.rate(parts, 5, session, on.ME, True) == line  # no such statement: nothing changes


def test_what_your_persona_changes_streams_two_unlabelled_answers_and_adds_the_choice(parts, fitted):
    session, _ = fitted
    updates = run(on.answer_twice(parts, session, "Plan my weekend."))
    first, second, message, prefer_1, prefer_2, add = updates[-1]
    assert "Answer 1" in first and "Answer 2" in second and "persona" not in (first + second).split("</div>")[0]
    assert prefer_1.visible and prefer_2.visible and not add.visible and "Which answer do you prefer" in message
    revealed = on.prefer_answer(parts, True, session)
    assert "with your persona" in revealed[0] + revealed[1] and revealed[5].visible
    before = len(session.labels)
    message, *_ = on.add_answer_choice(parts, session)
    assert len(session.labels) == before + 1 and f"now have {before + 1} labels" in message
    assert session.labels[-1].source == "your persona's answers"
    assert "Choose the answer you prefer first" in on.add_answer_choice(parts, session)[0]
    assert "Run SynthesizeMe or reload" in run(on.answer_twice(parts, LabelSession.new(BANK, seed=0), "Hi"))[-1][2]


def test_the_two_answers_can_be_cancelled_and_keep_nothing(parts, fitted):
    session, _ = fitted
    updates = on.answer_twice(parts, session, "Plan my weekend.")
    next(updates)  # the first streamed piece is on screen
    on.cancel(session)
    final = list(updates)[-1]
    assert "Cancelled: the answers stopped" in final[2] and session.answers is None
    assert "Choose the answer you prefer first" in on.add_answer_choice(parts, session)[0]


def test_no_answers_from_the_device_is_a_sentence(parts, fitted):
    session, _ = fitted
    silent = dataclasses.replace(parts, device=dataclasses.replace(parts.device, answer=lambda *args: iter(())))
    final = run(on.answer_twice(silent, session, "Plan my weekend."))[-1]
    assert "returned no answers" in final[2] and session.answers is None
