"""Event handlers of the "Try it yourself" tab, one module-level function per event.

Each handler takes what it works on as arguments: the visitor's ``LabelSession`` and the values of the input
components, plus the app's shared parts (``ModelHandle``, pair bank, ``contribute``) bound with
``functools.partial`` when ``components.try_tab`` wires it. So each can be called directly in a test with a
scripted LM. Handlers render with ``components.result_view`` / ``components.run_view``; the method is ``synth``'s.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dspy
import gradio as gr

from components.labeling import MIN_LABELS, BankPair, LabelSession, progress_text
from components.model_handle import ModelHandle
from components.result_view import demos_html, messages_text, persona_card, verdicts_html
from components.run_view import RunView, escape
from synth.data import PairFileError, parse_pairs_text, save_pairs
from synth.generate import draft_two_responses
from synth.parallel import FitCancelled
from synth.pipeline import DefaultJudge, SynthesizeMe

Contribute = Callable[[dict[str, Any]], str]  # adds an opted-in artifact to the population, returns a message

LABEL_ACTIONS = ("left", "right", "skip", "undo")
RESULT_VIEWS = 5  # persona card, demos, judge prompt, generation prompt, artifact file (see result_values)


# ---- rendering shared by the handlers ------------------------------------------------------------------------
def pair_view(session: LabelSession | None) -> tuple[str, str, str, str, str]:
    """progress, prompt, left reply, right reply, labels list: the labeling panel for one session."""
    if session is None:
        return progress_text(0), "", "", "", ""
    shown = session.current
    progress = progress_text(len(session.labels))
    if shown is None:
        prompt = '<div class="prompt-card">No pairs left: ask your own below, or start the run.</div>'
        return progress, prompt, "", "", labels_html(session)
    prompt = (f'<div class="prompt-card"><div class="prompt-meta">{escape(shown.pair.topic)}</div>'
              f'<div class="text-block prompt-text">{escape(shown.pair.prompt)}</div></div>')
    left = (f'<div class="reply-card"><div class="reply-tag">Left</div>'
            f'<div class="text-block">{escape(shown.left)}</div></div>')
    right = (f'<div class="reply-card"><div class="reply-tag">Right</div>'
             f'<div class="text-block">{escape(shown.right)}</div></div>')
    return progress, prompt, left, right, labels_html(session)


def labels_html(session: LabelSession) -> str:
    if not session.labels:
        return '<div class="labels empty">No labels yet.</div>'
    rows = []
    for label in session.labels:
        rows.append(f'<li><span class="label-src">{escape(label.source)}</span> '
                    f'<span class="label-prompt">{escape(label.pair.prompt[:120])}</span>'
                    f'<div class="label-chosen">preferred: {escape(label.pair.chosen.content[:160])}</div></li>')
    return f'<ol class="labels">{"".join(rows)}</ol>'


def result_values(estimator: SynthesizeMe) -> list[Any]:
    """The ``RESULT_VIEWS`` outputs for a fitted (or reloaded) judge; saves its artifact for download."""
    artifact = estimator.artifact_
    path = Path(tempfile.mkdtemp(prefix="synth-artifact-")) / "synthesizeme_artifact.json"
    estimator.save(path)
    return [persona_card(artifact), demos_html(artifact.get("demos", [])),
            messages_text(estimator.get_llm_judge_prompt()), estimator.get_generation_prompt(), str(path)]


# ---- preconditions --------------------------------------------------------------------------------------------
def require(session: LabelSession | None) -> LabelSession:
    """API clients get no page load; they call ``/start_session`` first, as the page does."""
    if session is None:
        raise gr.Error("this session has not started; reload the page (API: call /start_session first)")
    return session


def ready_lm(model: ModelHandle) -> dspy.BaseLM:
    """The loaded LM, or a visitor-facing error while it is still loading or failed to load."""
    try:
        return model.get(timeout=0)
    except RuntimeError as exc:
        raise gr.Error(str(exc)) from None


# ---- labeling -------------------------------------------------------------------------------------------------
def start_session(bank: list[BankPair]) -> tuple[LabelSession, str, str, str, str, str]:
    """A fresh session with the bank in a random order; runs on page load."""
    session = LabelSession.new(bank)
    return session, *pair_view(session)


def wait_for_model(model: ModelHandle) -> Iterator[str]:
    """Start the background load (once per app) and show its status now and again when it is done."""
    model.start()
    yield model.status()
    with contextlib.suppress(RuntimeError):
        model.get()
    yield model.status()


def label(action: str, session: LabelSession | None) -> tuple[str, str, str, str, str]:
    """One of ``LABEL_ACTIONS`` on the pair on screen; a label or skip with no pair left does nothing."""
    session = require(session)
    if action == "undo":
        session.undo()
    elif session.current is not None:
        if action == "skip":
            session.skip()
        else:
            session.choose(action)
    return pair_view(session)


def ask_own(model: ModelHandle, session: LabelSession | None, prompt: str) -> tuple[str, ...]:
    """Draft two replies to the visitor's own prompt and put them on screen next; clears the prompt box."""
    session = require(session)
    lm = ready_lm(model)
    try:
        first, second = draft_two_responses(lm, prompt)
    except (ValueError, RuntimeError) as exc:
        raise gr.Error(str(exc)) from None
    session.add_own(prompt.strip(), first, second)
    return "", *pair_view(session)


def import_pairs(session: LabelSession | None, path: str) -> tuple[str, ...]:
    """Add an uploaded pairs file as labels; a bad file gives a notice naming file, line and field."""
    session = require(session)
    name = Path(path).name
    try:
        pairs = parse_pairs_text(Path(path).read_text(encoding="utf-8"), path=name)
    except (PairFileError, UnicodeDecodeError) as exc:
        return f'<div class="notice error">{escape(str(exc))}</div>', *pair_view(session)
    session.add_imported(pairs)
    return f'<div class="notice ok">Imported {len(pairs)} pair(s) from {escape(name)}.</div>', *pair_view(session)


def export_labels(session: LabelSession | None) -> gr.File:
    """The visitor's labels as a JSONL file in the official row format, shown for download."""
    session = require(session)
    if not session.labels:
        raise gr.Error("label at least one pair first")
    path = Path(tempfile.mkdtemp(prefix="synth-labels-")) / "my_labels.jsonl"
    save_pairs(session.pairs(), path)
    return gr.File(value=str(path), visible=True)


# ---- run ------------------------------------------------------------------------------------------------------
def run_fit(model: ModelHandle, contribute: Contribute | None, session: LabelSession | None, settings: str,
            share: bool) -> Iterator[tuple[Any, ...]]:
    """Fit on the session's labels, streaming the run view; outputs: progress, log, Start button, the
    ``RESULT_VIEWS`` and the opt-in message. A cancelled or failed run keeps the page usable and keeps nothing."""
    session = require(session)
    pairs = session.pairs()
    if len(pairs) < MIN_LABELS:
        raise gr.Error(f"label at least {MIN_LABELS} pairs first ({len(pairs)} so far)")
    lm = ready_lm(model)
    session.cancel.clear()
    view = RunView()
    keep = [gr.skip()] * (RESULT_VIEWS + 1)
    yield view.progress_html(), view.log_html(), gr.Button(interactive=False), *keep
    estimator = SynthesizeMe(lm=lm, quick=settings == "Quick")
    try:
        for event in estimator.fit_events(pairs, cancel=session.cancel):
            view.apply(event)
            yield view.progress_html(), view.log_html(), gr.skip(), *keep
    except FitCancelled:
        view.note("Cancelled: nothing was kept from this run.", "cancelled")
        yield view.progress_html(), view.log_html(), gr.Button(interactive=True), *keep
        return
    except Exception as exc:  # shown to the visitor; the page stays usable
        view.note(f"The run failed: {exc}", "failed")
        yield view.progress_html(), view.log_html(), gr.Button(interactive=True), *keep
        return
    session.fitted = estimator
    message = contribute_fit(contribute, session) if share else gr.skip()
    yield view.progress_html(), view.log_html(), gr.Button(interactive=True), *result_values(estimator), message


def cancel_fit(session: LabelSession | None) -> None:
    """Ask the session's running fit to stop at its next step."""
    require(session).cancel.set()


def reload_artifact(session: LabelSession | None, path: str) -> list[Any]:
    """Make a saved artifact the session's judge, as if it had just been fitted."""
    session = require(session)
    try:
        session.fitted = SynthesizeMe.load(path)
    except ValueError as exc:
        raise gr.Error(str(exc).replace(str(Path(path).parent) + "/", "")) from None
    return result_values(session.fitted)


# ---- population opt-in ----------------------------------------------------------------------------------------
def contribute_fit(contribute: Contribute | None, session: LabelSession) -> str:
    """Add the session's fit to the population once; the message says what happened."""
    if session.fitted is None:
        return '<div class="notice">Your persona will be added once a run finishes.</div>'
    if contribute is None:
        return '<div class="notice error">The population store is not available in this deployment.</div>'
    if session.contributed is session.fitted:
        return '<div class="notice ok">Already added.</div>'
    session.contributed = session.fitted
    return f'<div class="notice ok">{escape(contribute(session.fitted.artifact_))}</div>'


def opt_in(contribute: Contribute | None, session: LabelSession | None, share: bool) -> str:
    """The opt-in box was ticked (contribute now, or after the run) or cleared (nothing to say)."""
    session = require(session)
    return contribute_fit(contribute, session) if share else ""


# ---- test the judge -------------------------------------------------------------------------------------------
def fill_test_pair(bank: list[BankPair], pair_id: str | None) -> tuple[Any, Any, Any]:
    """Copy a bank pair into the test fields (prompt, reply A, reply B); no pick leaves them as they are."""
    if not pair_id:
        return gr.skip(), gr.skip(), gr.skip()
    pair = {p.id: p for p in bank}[pair_id]
    return pair.prompt, pair.responses[0], pair.responses[1]


def test_judge(model: ModelHandle, session: LabelSession | None, prompt: str, reply_a: str, reply_b: str) -> str:
    """The visitor's judge and the default judge on one pair, as P(A) bars."""
    session = require(session)
    if session.fitted is None:
        raise gr.Error("run SynthesizeMe or reload an artifact first")
    if not (prompt.strip() and reply_a.strip() and reply_b.strip()):
        raise gr.Error("fill in the prompt and both replies")
    lm = ready_lm(model)
    personal = session.fitted.set_params(lm=lm).predict_proba(prompt, reply_a, reply_b)
    default = DefaultJudge(lm=lm, reasoning_tokens=session.fitted.settings_.reasoning_tokens).predict_proba(
        prompt, reply_a, reply_b)
    return verdicts_html(personal, default)
