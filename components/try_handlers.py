"""Event handlers of the "Try it yourself" tab, one module-level function per event.

Each handler takes the app's shared parts (``TryParts``: model handle, gate, visitors, limits, pair bank,
contributor, device tasks; bound with ``functools.partial`` when ``components.try_tab`` wires it), the visitor's
``LabelSession`` and the values of the input components, so each can be called directly in a test with a scripted
LM. No handler raises at the visitor: every problem becomes a sentence that says what happened and what to do, in
the part of the page it concerns. Model-bound handlers are generators that first wait their turn
(``ready_lm``: the model's load, then a free slot), showing why they wait, then run on the device
(``components.device``) with plain data only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from components import device
from components.contribute import Contribution, Contributor
from components.labeling import MIN_LABELS, BankPair, LabelSession, progress_text
from components.limits import GateRefused, Limits, ModelGate, Ticket
from components.model_handle import ModelHandle, ModelLoadFailed
from components.result_view import demos_html, fidelity_html, messages_text, persona_card, verdicts_html
from components.run_view import RunView, escape
from components.visitors import Visitors
from synth.artifacts import ArtifactLimits
from synth.data import PairFileError, parse_pairs_text, save_pairs
from synth.fidelity import ME, NOT_ME, UNSURE
from synth.generate import TwoAnswers
from synth.insights.splitting import persona_statements
from synth.parallel import FitCancelled
from synth.pipeline import SynthesizeMe
from synth.steps import StepSettings

LABEL_ACTIONS = ("left", "right", "skip", "undo")
MAX_RATED = 12  # "is this you?" rates at most this many statements of a persona
RATING_CHOICES = (("that's me", ME), ("not me", NOT_ME), ("not sure", UNSURE))
NO_SESSION = "This page has lost its session (the server restarted, or the page was open very long): reload the page."
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class DeviceTasks:
    """``components.device``'s functions as the app calls them: bound to the model and the cancel flags, and
    wrapped for the device (``spaces.GPU`` on ZeroGPU). Each takes the visitor's id first."""

    fit: Callable[..., Iterator[Any]]
    draft: Callable[..., tuple[str, str]]
    judge: Callable[..., Iterator[device.Verdict]]
    answer: Callable[..., Iterator[TwoAnswers]]


@dataclass(frozen=True)
class TryParts:
    """What every visitor's handlers share."""

    model: ModelHandle
    gate: ModelGate
    visitors: Visitors
    limits: Limits
    bank: list[BankPair]
    device: DeviceTasks
    contributor: Contributor | None = None


class Refused(RuntimeError):
    """A model action that cannot run now; the message says why and what to do."""


def notice(text: str, kind: str = "") -> str:
    return f'<div class="notice {kind}">{escape(text)}</div>'


# ---- rendering shared by the handlers ------------------------------------------------------------------------
def pair_view(session: LabelSession | None, note: str = "") -> tuple[str, str, str, str, str, str]:
    """progress, prompt, left reply, right reply, labels list, shown pair id: the labeling panel for one session."""
    if session is None:
        return NO_SESSION, "", "", "", "", ""
    shown = session.current
    progress = progress_text(len(session.labels)) + (f"  \n{note}" if note else "")
    if shown is None:
        prompt = '<div class="prompt-card">No pairs left: ask your own below, or start the run.</div>'
        return progress, prompt, "", "", labels_html(session), ""
    prompt = (f'<div class="prompt-card"><div class="prompt-meta">{escape(shown.pair.topic)}</div>'
              f'<div class="text-block prompt-text">{escape(shown.pair.prompt)}</div></div>')
    left = (f'<div class="reply-card"><div class="reply-tag">Left</div>'
            f'<div class="text-block">{escape(shown.left)}</div></div>')
    right = (f'<div class="reply-card"><div class="reply-tag">Right</div>'
             f'<div class="text-block">{escape(shown.right)}</div></div>')
    return progress, prompt, left, right, labels_html(session), shown.pair.id


def labels_html(session: LabelSession) -> str:
    if not session.labels:
        return '<div class="labels empty">No labels yet.</div>'
    rows = []
    for label in session.labels:
        rows.append(f'<li><span class="label-src">{escape(label.source)}</span> '
                    f'<span class="label-prompt">{escape(label.pair.prompt[:120])}</span>'
                    f'<div class="label-chosen">preferred: {escape(label.pair.chosen.content[:160])}</div></li>')
    return f'<ol class="labels">{"".join(rows)}</ol>'


def result_values(parts: TryParts, session: LabelSession) -> list[Any]:
    """Persona card, demos, judge prompt, generation prompt, artifact file, then "is this you?": one radio per
    statement (``MAX_RATED``) and the fidelity line. The artifact is saved in the visitor's folder for download."""
    estimator = session.fitted
    artifact = estimator.artifact_
    path = parts.visitors.folder(session) / "synthesizeme_artifact.json"
    estimator.save(path)
    return [persona_card(artifact), demos_html(artifact.get("demos", [])),
            messages_text(estimator.get_llm_judge_prompt()), estimator.get_generation_prompt(), str(path),
            *rating_views(session)]


def rating_views(session: LabelSession) -> list[Any]:
    shown = session.statements[:MAX_RATED]
    radios = [gr.Radio(label=statement, choices=list(RATING_CHOICES), value=session.ratings.get(statement),
                       visible=True) for statement in shown]
    radios += [gr.Radio(visible=False, value=None) for _ in range(MAX_RATED - len(shown))]
    return [*radios, fidelity_html(session.statements[:MAX_RATED], session.ratings)]


RESULT_VIEWS = 5 + MAX_RATED + 1  # see result_values


def adopt(session: LabelSession, estimator: SynthesizeMe, fitted_here: bool) -> None:
    """Make ``estimator`` the session's judge: its statements to rate start unrated."""
    session.fitted, session.fitted_here = estimator, fitted_here
    session.statements, session.ratings = persona_statements(estimator.get_persona()), {}


# ---- waiting for the model --------------------------------------------------------------------------------------
def ready_lm(parts: TryParts, session: LabelSession) -> Generator[str, None, Ticket]:
    """The one place a model-bound event waits: for the model's load (never failing because it is still loading),
    then for a free slot. Yields what to show meanwhile; returns the ``Ticket`` holding the slot (release it).
    Raises ``Refused`` (with a sentence for the visitor) when the event cannot run."""
    if session.model_events >= parts.limits.max_model_events:
        raise Refused(f"This visit has run its {parts.limits.max_model_events} model actions, the most one visit "
                      f"may run on this shared studio; reload the page to start a new visit.")
    try:
        ticket = parts.gate.admit(session.id, session.client)
    except GateRefused as refused:
        raise Refused(str(refused)) from None
    session.model_events += 1
    session.cancel.clear()
    try:
        while not parts.model.wait(timeout=1.0):
            if session.cancel.is_set():
                raise FitCancelled("cancelled while the model loaded")
            yield parts.model.loading_text()
        try:
            parts.model.get(timeout=0)
        except ModelLoadFailed as failed:
            raise Refused(str(failed)) from None
        while not ticket.wait(timeout=1.0):
            if session.cancel.is_set():
                raise FitCancelled("cancelled while waiting for a free slot")
            yield (f"Waiting for the model: {ticket.ahead} visitor(s) ahead of you. It starts by itself; "
                   f"Cancel gives up your place.")
    except BaseException:
        ticket.release()
        raise
    return ticket


def until_cancelled(stream: Iterator[T], session: LabelSession) -> Iterator[T]:
    """The items of a device task's ``stream`` until the visitor cancels or leaves (then ``FitCancelled``); the
    stream is closed either way, which is what stops a task running in a ZeroGPU worker. A fit's ``Fitted`` ends it
    whatever the flag says: a finished fit sets its own cancel flag to stop its leftover work."""
    try:
        for item in stream:
            if isinstance(item, device.Fitted):
                yield item
                return
            if session.cancel.is_set():
                raise FitCancelled("cancelled by the visitor")
            yield item
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def relay(inner: Generator[str, None, R], render: Callable[[str], T]) -> Generator[T, None, R]:
    """Yield ``render(note)`` for each note of ``inner`` and return ``inner``'s return value."""
    while True:
        try:
            note = next(inner)
        except StopIteration as stop:
            return stop.value
        yield render(note)


def text_limit(parts: TryParts, **texts: str) -> str | None:
    """A sentence naming the first text over the field limit, or None when all fit."""
    for name, text in texts.items():
        if len(text or "") > parts.limits.max_field_chars:
            return (f"The {name} is {len(text):,} characters; this studio takes at most "
                    f"{parts.limits.max_field_chars:,} per field. Shorten it and try again.")
    return None


def admit_judge_action(parts: TryParts, session: LabelSession, say: Callable[..., T], no_judge: str, empty: str,
                       **texts: str) -> Generator[T, None, Ticket | None]:
    """The model slot for an action on the visitor's judge, yielding ``say(note)`` while it waits; None (the reason
    said) when it cannot run: ``no_judge`` when none is fitted or reloaded yet, ``empty`` when a text is blank, a
    text over the field limit, or the wait refused or cancelled."""
    if session.fitted is None:
        problem = no_judge
    elif not all((text or "").strip() for text in texts.values()):
        problem = empty
    else:
        problem = text_limit(parts, **texts)
    if problem:
        yield say(problem, "error")
        return None
    try:
        return (yield from relay(ready_lm(parts, session), say))
    except (Refused, FitCancelled) as stopped:
        yield say(_stopped_text(stopped), "error")
        return None


# ---- labeling -------------------------------------------------------------------------------------------------
def start_session(parts: TryParts, client: str = "", session_hash: str | None = None) -> tuple[Any, ...]:
    """A fresh session with the bank in a random order; runs on page load."""
    session = LabelSession.new(parts.bank, client=client)
    parts.visitors.join(session, session_hash)
    return session, *pair_view(session)


def wait_for_model(model: ModelHandle) -> Iterator[str]:
    """Start the background load (once per app) and keep the status line current until it is done."""
    model.start()
    yield model.status()
    while not model.wait(timeout=2.0):
        yield model.status()
    yield model.status()


def label(parts: TryParts, action: str, session: LabelSession | None, pair_id: str | None = None) -> tuple[str, ...]:
    """One of ``LABEL_ACTIONS`` on the pair ``pair_id`` as it was shown when the visitor clicked (None: the pair on
    screen). A click for a pair already answered changes nothing, so each click counts once."""
    if session is None:
        return pair_view(None)
    with session.lock:
        if action == "undo":
            session.undo()
            return pair_view(session)
        if action != "skip" and len(session.labels) >= parts.limits.max_pairs:
            return pair_view(session, f"You have {len(session.labels)} labels, the most one visit keeps: start the "
                                      f"run, or undo a label to change it.")
        done = session.skip(pair_id or None) if action == "skip" else session.choose(action, pair_id or None)
        return pair_view(session, "" if done else "That click was for a pair already answered; it was not counted "
                                                  "again.")


def ask_own(parts: TryParts, session: LabelSession | None, prompt: str) -> Iterator[tuple[Any, ...]]:
    """Draft two replies to the visitor's own prompt and put them on screen next; outputs: prompt box, message,
    then the labeling panel."""
    if session is None:
        yield gr.skip(), notice(NO_SESSION, "error"), *pair_view(None)
        return
    prompt = (prompt or "").strip()
    problem = ("Write a prompt first." if not prompt else text_limit(parts, prompt=prompt)) or (
        "You have the most labels one visit keeps; start the run instead."
        if len(session.labels) >= parts.limits.max_pairs else None)
    if problem:
        yield gr.skip(), notice(problem, "error"), *pair_view(session)
        return
    try:
        ticket = yield from relay(ready_lm(parts, session),
                                  lambda note: (gr.skip(), notice(note), *[gr.skip()] * 6))
    except (Refused, FitCancelled) as stopped:
        yield gr.skip(), notice(_stopped_text(stopped), "error"), *pair_view(session)
        return
    with ticket:
        try:
            first, second = parts.device.draft(session.id, prompt)
        except (ValueError, RuntimeError) as exc:
            yield gr.skip(), notice(f"The model could not draft two replies ({exc}). Try again, or rephrase the "
                                    f"prompt.", "error"), *pair_view(session)
            return
    with session.lock:
        session.add_own(prompt, first, second)
    yield "", notice("Two drafts are on screen: which do you prefer?", "ok"), *pair_view(session)


def import_pairs(parts: TryParts, session: LabelSession | None, path: str | None) -> tuple[str, ...]:
    """Add an uploaded pairs file as labels; a bad file gives a notice naming file, line and field."""
    if session is None:
        return notice(NO_SESSION, "error"), *pair_view(None)
    if not path:
        return notice("No file arrived; choose a .jsonl or .json file and try again.", "error"), *pair_view(session)
    name = Path(path).name
    problem = _upload_problem(parts, Path(path))
    if problem is None:
        try:
            pairs = parse_pairs_text(Path(path).read_text(encoding="utf-8"), path=name)
        except (PairFileError, UnicodeDecodeError, RecursionError) as exc:
            problem = _file_error_text(name, exc)
    if problem is None:
        problem = _imported_pairs_problem(parts, session, pairs, name)
    if problem is not None:
        return notice(problem, "error"), *pair_view(session)
    with session.lock:
        session.add_imported(pairs)
    return notice(f"Imported {len(pairs)} pair(s) from {name}.", "ok"), *pair_view(session)


def _upload_problem(parts: TryParts, path: Path) -> str | None:
    size = path.stat().st_size if path.exists() else 0
    if size > parts.limits.max_upload_bytes:
        return (f"{path.name} is {size / 2**20:.1f} MB; this studio takes files up to {parts.limits.max_upload_mb} "
                f"MB. Upload a smaller file.")
    return None


def _file_error_text(name: str, exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return f"{name}: nested too deeply to be a pairs file; check that it is the right file."
    if isinstance(exc, UnicodeDecodeError):
        return f"{name}: not UTF-8 text; save it as UTF-8 JSON and try again."
    return f"{exc} Fix the file and import it again."


def _imported_pairs_problem(parts: TryParts, session: LabelSession, pairs: list, name: str) -> str | None:
    room = parts.limits.max_pairs - len(session.labels)
    if len(pairs) > room:
        return (f"{name} holds {len(pairs)} pairs but this visit has room for {max(room, 0)} more (at most "
                f"{parts.limits.max_pairs} labels per visit; 5 to 15 are what the method needs). Import a shorter "
                f"file.")
    for number, pair in enumerate(pairs, start=1):
        for field_name, turn in (("context", pair.context[-1]), ("chosen", pair.chosen), ("rejected", pair.rejected)):
            if len(turn.content) > parts.limits.max_field_chars:
                return (f"{name}, pair {number}, field '{field_name}': {len(turn.content):,} characters; this studio "
                        f"takes at most {parts.limits.max_field_chars:,} per text. Shorten it and import again.")
    return None


def export_labels(parts: TryParts, session: LabelSession | None) -> tuple[Any, str]:
    """The visitor's labels as a JSONL file in the official row format (shown for download), and a message."""
    if session is None:
        return gr.skip(), notice(NO_SESSION, "error")
    if not session.labels:
        return gr.skip(), notice("Label at least one pair first; then export.", "error")
    path = parts.visitors.folder(session) / "my_labels.jsonl"
    save_pairs(session.pairs(), path)
    return gr.File(value=str(path), visible=True), notice(f"Exported {len(session.labels)} label(s).", "ok")


# ---- run ------------------------------------------------------------------------------------------------------
def run_fit(parts: TryParts, session: LabelSession | None, settings: str, share: bool,
            share_evidence: bool) -> Iterator[tuple[Any, ...]]:
    """Fit on the session's labels, streaming the run view; outputs: progress, log, Start button, the
    ``RESULT_VIEWS`` and the opt-in message. A cancelled or failed run keeps the page usable and keeps nothing; a
    step that fails after a fit (e.g. joining the population) never hides the fit."""
    view = RunView()
    keep = [gr.skip()] * (RESULT_VIEWS + 1)

    def show(button: Any = None) -> tuple[Any, ...]:
        return view.progress_html(), view.log_html(), gr.skip() if button is None else button, *keep

    if session is None:
        view.note(NO_SESSION, "failed")
        yield show()
        return
    pairs = session.pairs()
    if len(pairs) < MIN_LABELS:
        view.note(f"Label at least {MIN_LABELS} pairs first ({len(pairs)} so far), then press Start.", "failed")
        yield show()
        return
    try:
        ticket = yield from relay(ready_lm(parts, session),
                                  lambda note: (view.waiting_html(note), view.log_html(), gr.Button(interactive=False),
                                                *keep))
    except (Refused, FitCancelled) as stopped:
        view.note(_stopped_text(stopped), "cancelled" if isinstance(stopped, FitCancelled) else "failed")
        yield show(gr.Button(interactive=True))
        return
    view.restart()
    yield show(gr.Button(interactive=False))
    artifact = None
    with ticket:
        stream = parts.device.fit(session.id, [pair.to_dict() for pair in pairs], settings == "Quick")
        try:
            for item in until_cancelled(stream, session):
                if isinstance(item, device.Fitted):  # the fit's last item
                    artifact = item.artifact
                else:
                    view.apply(item)
                    yield show()
        except FitCancelled:
            view.note("Cancelled: nothing was kept from this run.", "cancelled")
            yield show(gr.Button(interactive=True))
            return
        except Exception as exc:  # shown to the visitor; the page stays usable
            view.note(f"The run failed ({exc}). Press Start to try again; Quick settings need less of the model.",
                      "failed")
            yield show(gr.Button(interactive=True))
            return
    try:
        if artifact is None:
            raise RuntimeError("the device returned no result")
        with session.lock:
            adopt(session, SynthesizeMe.from_artifact(artifact), fitted_here=True)
            results = result_values(parts, session)
    except Exception as exc:  # e.g. a device worker that died, or a full disk: say so, keep the page usable
        view.note(f"The run ended but its result could not be shown ({exc}). Press Start to run again.", "failed")
        yield show(gr.Button(interactive=True))
        return
    yield view.progress_html(), view.log_html(), gr.Button(interactive=True), *results, gr.skip()
    if share:
        yield (*[gr.skip()] * (3 + RESULT_VIEWS), contribute_fit(parts, session, share_evidence))


def _stopped_text(stopped: Exception) -> str:
    if isinstance(stopped, FitCancelled):
        return "Cancelled before it started; nothing ran."
    return str(stopped)


def cancel(session: LabelSession | None) -> None:
    """Ask the session's running model action (fit, judge test, answers) to stop at its next step."""
    if session is not None:
        session.cancel.set()


def studio_artifact_limits(limits: Limits) -> ArtifactLimits:
    """What a reloaded artifact may set here: this studio's own default settings, and texts no longer than a field."""
    default = StepSettings()
    return ArtifactLimits(reasoning_tokens=default.reasoning_tokens, persona_tokens=default.persona_tokens,
                          max_turn_chars=default.max_turn_chars, num_candidates=default.num_candidates,
                          max_demos=default.max_labeled_demos, max_labeled_demos=default.max_labeled_demos,
                          num_threads=default.num_threads, demos=default.max_labeled_demos,
                          demo_chars=limits.max_field_chars, persona_chars=limits.max_field_chars)


def reload_artifact(parts: TryParts, session: LabelSession | None, path: str | None) -> tuple[Any, ...]:
    """Make a saved artifact the session's judge; outputs: the ``RESULT_VIEWS`` and a message. The file is data:
    it is checked and bounded (``synth.artifacts``), its judge runs with this studio's settings, and it can be
    tested but not added to the population."""
    keep = [gr.skip()] * RESULT_VIEWS
    if session is None:
        return *keep, notice(NO_SESSION, "error")
    if not path:
        return *keep, notice("No file arrived; choose the artifact .json file and try again.", "error")
    name = Path(path).name
    problem = _upload_problem(parts, Path(path))
    if problem is None:
        try:
            estimator = SynthesizeMe.load(path, limits=studio_artifact_limits(parts.limits))
        except ValueError as exc:  # ArtifactError names the file, line and field
            problem = f"{str(exc).replace(str(Path(path).parent) + '/', '')} Reload an artifact this studio saved."
    if problem is not None:
        return *keep, notice(problem, "error")
    with session.lock:
        adopt(session, estimator, fitted_here=False)
        results = result_values(parts, session)
    clamped = " Some of its settings were lowered to this studio's." if getattr(estimator, "clamped_", None) else ""
    return *results, notice(f"Reloaded {name}: test it below.{clamped} (A reloaded persona cannot join the "
                            f"population; only one fitted in this visit can.)", "ok")


# ---- population opt-in ----------------------------------------------------------------------------------------
def contribute_fit(parts: TryParts, session: LabelSession, share_evidence: bool) -> str:
    """Add the session's own fit to the population once; the message says what happened and what to do."""
    if parts.contributor is None:
        return notice("This deployment keeps no population, so there is nothing to join.", "error")
    if session.contribution is not None:
        if session.contribution.removed:
            return notice("You removed your persona; a visit adds its persona once.", "error")
        return notice("Your persona is already in the population (one per visit).", "ok")
    if session.fitted is None:
        return notice("Your persona will be added when the run finishes.")
    if not session.fitted_here:
        return notice("Only a persona fitted in this visit can join the population, not a reloaded one: press "
                      "Start to fit yours.", "error")
    if not session.fitted.get_persona().strip():
        return notice("This run wrote no persona, so there is nothing to add; label a few more pairs and run "
                      "again.", "error")
    try:
        contribution = parts.contributor.add(session.fitted.artifact_, session.statements, session.ratings,
                                             share_evidence)
    except Exception as exc:  # the fit stays on screen; only joining failed
        return notice(f"Your persona could not be added ({exc}); your results above are unaffected. Untick and "
                      f"tick the box to try again.", "error")
    session.contribution = contribution
    return _joined_text(contribution, share_evidence)


def _joined_text(contribution: Contribution, share_evidence: bool) -> str:
    shared = ("with the reasoning about the bank's pairs, those pairs and your answers to “Is this you?”"
              if share_evidence else "without any reasoning, pairs or answers")
    return (f'<div class="notice ok">Thank you! Your persona joined the population anonymously as '
            f'<b>{escape(contribution.user_id)}</b>, {shared}. Your deletion code is '
            f'<code class="deletion-code">{escape(contribution.deletion_code)}</code>: keep it to remove your '
            f'persona later with “Remove my persona”.</div>')


def opt_in(parts: TryParts, session: LabelSession | None, share: bool, share_evidence: bool) -> str:
    """The opt-in box was ticked (contribute now, or after the run) or cleared (nothing to say)."""
    if session is None:
        return notice(NO_SESSION, "error")
    with session.lock:
        return contribute_fit(parts, session, share_evidence) if share else ""


def share_evidence_changed(parts: TryParts, session: LabelSession | None, share_evidence: bool) -> str:
    """The evidence consent changed after the persona joined: rewrite the record with or without it."""
    if session is None:
        return notice(NO_SESSION, "error")
    with session.lock:
        if session.contribution is None or session.contribution.removed or parts.contributor is None:
            return ""
        return _save_contribution(parts, session, share_evidence)


def _save_contribution(parts: TryParts, session: LabelSession, share_evidence: bool) -> str:
    try:
        parts.contributor.update(session.contribution, session.ratings, share_evidence)
    except Exception as exc:
        return notice(f"Your choice could not be saved ({exc}); try again in a moment.", "error")
    return _joined_text(session.contribution, share_evidence)


def remove_persona(parts: TryParts, session: LabelSession | None, code: str) -> str:
    """Delete the record whose deletion code this is (the visitor's own, or one they kept from an earlier visit)."""
    code = (code or "").strip()
    if not code:
        return notice("Paste your deletion code (shown when your persona joined), then press Remove.", "error")
    if parts.contributor is None:
        return notice("This deployment keeps no population.", "error")
    if not parts.contributor.remove(code):
        return notice("No persona has this deletion code (it may have been removed already). Check the code.",
                      "error")
    if session is not None and session.contribution is not None and session.contribution.deletion_code == code:
        session.contribution = dataclasses.replace(session.contribution, removed=True)
    return notice("Your persona was removed from the population. The insights tab drops it at its next update.",
                  "ok")


# ---- is this you? ---------------------------------------------------------------------------------------------
def rate(parts: TryParts, index: int, session: LabelSession | None, value: str | None,
         share_evidence: bool) -> str:
    """The visitor's answer for statement ``index``; returns the fidelity line (and stores the answers with the
    persona when they consented to share the evidence)."""
    if session is None:
        return notice(NO_SESSION, "error")
    with session.lock:
        shown = session.statements[:MAX_RATED]
        if index < len(shown) and value in dict(RATING_CHOICES).values():
            session.ratings[shown[index]] = value
        line = fidelity_html(shown, session.ratings)
        if session.contribution is not None and share_evidence and parts.contributor is not None:
            try:
                parts.contributor.save_ratings(session.contribution, session.ratings)
            except Exception as exc:
                return line + notice(f"Your answers could not be saved ({exc}); answer again in a moment.", "error")
        return line


# ---- test the judge -------------------------------------------------------------------------------------------
def fill_test_pair(bank: list[BankPair], pair_id: str | None) -> tuple[Any, Any, Any]:
    """Copy a bank pair into the test fields (prompt, reply A, reply B); no pick leaves them as they are."""
    pair = {p.id: p for p in bank}.get(pair_id or "")
    if pair is None:
        return gr.skip(), gr.skip(), gr.skip()
    return pair.prompt, pair.responses[0], pair.responses[1]


def judge_artifact(estimator: SynthesizeMe) -> dict[str, Any]:
    """The plain data the device rebuilds a judge from: persona, demos and settings (no pairs, no traces). The
    settings are this studio's own (quick or default, as the fit was), never a file's: an uploaded artifact is
    data, not configuration."""
    settings = StepSettings.resolve(quick=bool(estimator.quick))
    return {"persona": estimator.get_persona(), "demos": estimator.get_demos()[:settings.max_demos],
            "config": {**dataclasses.asdict(settings), "quick": bool(estimator.quick)}}


def test_judge(parts: TryParts, session: LabelSession | None, prompt: str, reply_a: str,
               reply_b: str) -> Iterator[str]:
    """The visitor's judge and the default judge on one pair, as P(A) bars; cancellable between the two."""
    if session is None:
        yield notice(NO_SESSION, "error")
        return
    ticket = yield from admit_judge_action(parts, session, notice, "Run SynthesizeMe or reload an artifact first; "
                                           "then test your judge here.", "Fill in the prompt and both replies (or "
                                           "pick a pair from the bank).", prompt=prompt,
                                           **{"reply A": reply_a, "reply B": reply_b})
    if ticket is None:
        return
    verdicts: dict[str, float] = {}
    with ticket:
        yield notice("Your judge is reading the pair (both orders)…")
        stream = parts.device.judge(session.id, judge_artifact(session.fitted), prompt, reply_a, reply_b)
        try:
            for verdict in until_cancelled(stream, session):
                verdicts[verdict.judge] = verdict.p_a
                if verdict.judge == "personal":
                    yield notice("Your judge has decided; now the default judge…")
        except FitCancelled:
            yield notice("Cancelled: the comparison stopped.", "error")
            return
        except Exception as exc:
            yield notice(f"The comparison failed ({exc}); press Compare verdicts to try again.", "error")
            return
    yield verdicts_html(verdicts["personal"], verdicts["default"])


# ---- what your persona changes -------------------------------------------------------------------------------
ANSWER_VIEWS = 5  # first answer, second answer, message, the two "I prefer this one" buttons, "add to my labels"


def answer_card(number: int, text: str, reveal: str = "") -> str:
    tag = f"Answer {number}" + (f" · {reveal}" if reveal else "")
    return (f'<div class="reply-card answer-card"><div class="reply-tag">{escape(tag)}</div>'
            f'<div class="text-block">{escape(text) or "…"}</div></div>')


def answer_twice(parts: TryParts, session: LabelSession | None, prompt: str) -> Iterator[tuple[Any, ...]]:
    """The model answers ``prompt`` twice, with no system prompt and with the persona's generation prompt, streamed
    side by side in a random order and unlabelled; outputs: the two answers, a message, the two prefer buttons and
    the "add to my labels" button."""
    hidden = gr.Button(visible=False)

    def say(text: str, kind: str = "") -> tuple[Any, ...]:
        return gr.skip(), gr.skip(), notice(text, kind), gr.skip(), gr.skip(), gr.skip()

    if session is None:
        yield say(NO_SESSION, "error")
        return
    prompt = (prompt or "").strip()
    ticket = yield from admit_judge_action(parts, session, say, "Run SynthesizeMe or reload an artifact first: the "
                                           "second answer uses your persona.", "Write a prompt first.", prompt=prompt)
    if ticket is None:
        return
    with session.lock:
        session.answers, session.answer_choice = None, None
    latest = None
    with ticket:
        stream = parts.device.answer(session.id, judge_artifact(session.fitted), prompt,
                                     session.seed + session.model_events)
        try:
            for latest in until_cancelled(stream, session):
                yield (answer_card(1, latest.first), answer_card(2, latest.second),
                       notice("Writing both answers…"), hidden, hidden, hidden)
        except FitCancelled:
            yield say("Cancelled: the answers stopped.", "error")
            return
        except Exception as exc:
            yield say(f"The model could not answer ({exc}); try again, or rephrase the prompt.", "error")
            return
    if latest is None:
        yield say("The model returned no answers; press Answer twice to try again.", "error")
        return
    with session.lock:
        session.answers = latest
    shown = gr.Button(visible=True)
    yield (answer_card(1, latest.first), answer_card(2, latest.second),
           notice("Which answer do you prefer? Which one had your persona is revealed after you choose."),
           shown, shown, hidden)


def prefer_answer(parts: TryParts, first: bool, session: LabelSession | None) -> tuple[Any, ...]:
    """The visitor preferred the first (or second) answer: reveal which one had the persona."""
    if session is None or session.answers is None:
        return (gr.skip(), gr.skip(), notice(NO_SESSION if session is None else "Ask for two answers first.",
                                             "error"), gr.skip(), gr.skip(), gr.skip())
    with session.lock:
        answers = session.answers
        session.answer_choice = first
    persona, plain = "with your persona", "no system prompt"
    reveal = (persona, plain) if answers.persona_first else (plain, persona)
    chose_persona = first == answers.persona_first
    message = (f"You preferred answer {1 if first else 2}, the one written "
               f"{'with your persona' if chose_persona else 'without your persona'}. Add this choice to your labels "
               f"to fit on it next.")
    hidden = gr.Button(visible=False)
    return (answer_card(1, answers.first, reveal[0]), answer_card(2, answers.second, reveal[1]),
            notice(message, "ok"), hidden, hidden, gr.Button(visible=True))


def add_answer_choice(parts: TryParts, session: LabelSession | None) -> tuple[Any, ...]:
    """Add the visitor's choice between the two answers as a labelled pair; outputs: message, labeling panel."""
    if session is None:
        return notice(NO_SESSION, "error"), *pair_view(None)
    with session.lock:
        if session.answers is None or session.answer_choice is None:
            return notice("Choose the answer you prefer first.", "error"), *pair_view(session)
        if len(session.labels) >= parts.limits.max_pairs:
            return notice("You have the most labels one visit keeps; start the run instead.", "error"), *pair_view(
                session)
        try:
            pair = session.answers.preferred_pair(session.answer_choice, user_id="studio-visitor")
        except ValueError as exc:
            return notice(f"This choice cannot be a label ({exc}); ask for two new answers.", "error"), *pair_view(
                session)
        session.add_choice(pair, "your persona's answers")
        session.answers, session.answer_choice = None, None
        return notice(f"Added: you now have {len(session.labels)} labels. Press Start above to fit on all of them.",
                      "ok"), *pair_view(session)
