"""The "Try it yourself" tab: label pairs, watch SynthesizeMe fit live, then read, download and test the judge.

Only wiring and rendering live here; labeling state is in ``components.labeling``, the method in ``synth``.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from components.labeling import MIN_LABELS, BankPair, LabelSession, load_bank, progress_text
from components.model_handle import ModelHandle
from components.result_view import demos_html, messages_text, persona_card, verdicts_html
from components.run_view import RunView, escape
from synth.data import PairFileError, parse_pairs_text, save_pairs
from synth.generate import draft_two_responses
from synth.parallel import FitCancelled
from synth.pipeline import DefaultJudge, SynthesizeMe

# Keyboard shortcuts for labeling; ignored while typing and when the Try tab is hidden.
SHORTCUTS_JS = """
<script>
document.addEventListener('keydown', (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.isContentEditable)) return;
  const ids = {ArrowLeft: 'btn-left', ArrowRight: 'btn-right',
               s: 'btn-skip', S: 'btn-skip', u: 'btn-undo', U: 'btn-undo'};
  const id = ids[event.key];
  if (!id) return;
  const button = document.getElementById(id);
  if (!button || button.offsetParent === null || button.disabled) return;
  event.preventDefault();
  button.click();
});
</script>
"""

Identity = Callable[[Callable], Callable]


def _identity(fn: Callable) -> Callable:
    return fn


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


def require(session: LabelSession | None) -> LabelSession:
    """API clients get no page load; they call ``/start_session`` first, as the page does."""
    if session is None:
        raise gr.Error("this session has not started; reload the page (API: call /start_session first)")
    return session


def labels_html(session: LabelSession) -> str:
    if not session.labels:
        return '<div class="labels empty">No labels yet.</div>'
    rows = []
    for label in session.labels:
        rows.append(f'<li><span class="label-src">{escape(label.source)}</span> '
                    f'<span class="label-prompt">{escape(label.pair.prompt[:120])}</span>'
                    f'<div class="label-chosen">preferred: {escape(label.pair.chosen.content[:160])}</div></li>')
    return f'<ol class="labels">{"".join(rows)}</ol>'


def build_try_tab(demo: gr.Blocks, model: ModelHandle, bank: list[BankPair] | None = None,
                  gpu: Identity = _identity, contribute: Callable[[dict[str, Any]], str] | None = None,
                  fit_concurrency: int = 1) -> gr.State:
    """Lay out the tab inside the current Blocks context, wire its events, and return the session state.

    ``gpu`` wraps the model-heavy handlers (``spaces.GPU`` on Hugging Face); ``contribute`` adds an opted-in
    artifact to the shared population and returns a message.
    """
    bank = bank if bank is not None else load_bank()
    session_state = gr.State(None)

    status = gr.Markdown(model.status(), elem_id="model-status", elem_classes=["model-status"])

    gr.Markdown("### 1 · Tell us which reply you prefer", elem_classes=["section-title"])
    progress = gr.Markdown(progress_text(0), elem_id="label-progress", elem_classes=["label-progress"])
    prompt_html = gr.HTML(elem_id="pair-prompt")
    with gr.Row(equal_height=True):
        left_html = gr.HTML(elem_id="reply-left")
        right_html = gr.HTML(elem_id="reply-right")
    with gr.Row(elem_classes=["label-buttons"]):
        left_btn = gr.Button("◀ Left is better  (←)", elem_id="btn-left", variant="primary")
        skip_btn = gr.Button("Skip  (S)", elem_id="btn-skip", variant="secondary")
        undo_btn = gr.Button("Undo  (U)", elem_id="btn-undo", variant="secondary")
        right_btn = gr.Button("Right is better ▶  (→)", elem_id="btn-right", variant="primary")

    with gr.Accordion("Ask your own prompt", open=False):
        own_prompt = gr.Textbox(label="Your prompt", lines=2, max_length=2000, elem_id="own-prompt",
                                placeholder="e.g. How should I prepare for a job interview?")
        own_btn = gr.Button("Draft two replies to label", elem_id="btn-own")
    with gr.Accordion("Import or export labels", open=False):
        gr.Markdown("Import a JSONL file or JSON list of rows `{context, chosen, rejected}` (the official "
                    "SynthesizeMe / PersonalRewardBench format). Imported pairs count as labels.")
        with gr.Row():
            import_btn = gr.UploadButton("Import pairs (.jsonl / .json)", file_types=[".jsonl", ".json"],
                                         elem_id="btn-import")
            export_btn = gr.Button("Export my labels (JSONL)", elem_id="btn-export")
        import_msg = gr.HTML(elem_id="import-msg")
        export_file = gr.File(label="Your labels", visible=False, elem_id="export-file")
    with gr.Accordion("Your labels", open=False):
        labels_list = gr.HTML(elem_id="labels-list")

    gr.Markdown("### 2 · Run SynthesizeMe", elem_classes=["section-title"])
    with gr.Row():
        mode = gr.Radio(["Quick", "Default"], value="Quick", label="Settings", elem_id="fit-mode",
                        info="Quick: 3 candidates, 2 demos, short reasoning. Default: the paper's 10 candidates.")
        start_btn = gr.Button("Start", variant="primary", elem_id="btn-start", scale=0, min_width=140)
        cancel_btn = gr.Button("Cancel", variant="stop", elem_id="btn-cancel", scale=0, min_width=120)
    run_progress = gr.HTML(elem_id="run-progress")
    run_log = gr.HTML(elem_id="run-log")

    gr.Markdown("### 3 · Your personalized judge", elem_classes=["section-title"])
    persona_html = gr.HTML('<div class="persona-card empty">Run SynthesizeMe (or reload an artifact) to see '
                           'your persona here.</div>', elem_id="persona")
    demos_view = gr.HTML(elem_id="demos")
    with gr.Accordion("Prompts to reuse anywhere", open=False):
        judge_prompt = gr.Textbox(label="Judge prompt (chat messages)", lines=8, max_lines=20, buttons=["copy"],
                                  interactive=False, elem_id="judge-prompt")
        generation_prompt = gr.Textbox(label="Generation prompt (system prompt)", lines=6, max_lines=20,
                                       buttons=["copy"], interactive=False, elem_id="generation-prompt")
    with gr.Row():
        artifact_file = gr.File(label="Artifact JSON", interactive=False, elem_id="artifact-file")
        reload_btn = gr.UploadButton("Reload a saved artifact (.json)", file_types=[".json"], elem_id="btn-reload")
    opt_in = gr.Checkbox(label="Add my persona anonymously to the population shown in “Population insights”",
                         value=False, elem_id="opt-in")
    opt_in_msg = gr.HTML(elem_id="opt-in-msg")

    with gr.Accordion("Test your judge", open=False):
        bank_pick = gr.Dropdown(choices=[(f"{p.topic}: {p.prompt[:70]}", p.id) for p in bank], value=None,
                                label="Pick a pair from the bank (or write your own below)", elem_id="test-pick")
        test_prompt = gr.Textbox(label="Prompt", lines=2, elem_id="test-prompt")
        with gr.Row():
            test_a = gr.Textbox(label="Reply A", lines=5, elem_id="test-a")
            test_b = gr.Textbox(label="Reply B", lines=5, elem_id="test-b")
        test_btn = gr.Button("Compare verdicts", elem_id="btn-test")
        test_out = gr.HTML(elem_id="test-out")

    label_outputs = [progress, prompt_html, left_html, right_html, labels_list]
    result_outputs = [persona_html, demos_view, judge_prompt, generation_prompt, artifact_file]

    # ---- labeling --------------------------------------------------------------------------------------------
    def start_session():
        session = LabelSession.new(bank)
        return session, *pair_view(session)

    def wait_for_model():
        model.start()
        yield model.status()
        with contextlib.suppress(RuntimeError):
            model.get()
        yield model.status()

    demo.load(start_session, outputs=[session_state, *label_outputs], queue=False, api_name="start_session")
    demo.load(wait_for_model, outputs=[status], concurrency_limit=None, show_progress="hidden",
              api_name="model_status")

    def act(action: str):
        def handler(session: LabelSession):
            session = require(session)
            if action == "undo":
                session.undo()
            elif session.current is not None:
                session.skip() if action == "skip" else session.choose(action)
            return pair_view(session)
        return handler

    for button, action in ((left_btn, "left"), (right_btn, "right"), (skip_btn, "skip"), (undo_btn, "undo")):
        button.click(act(action), inputs=session_state, outputs=label_outputs, concurrency_limit=None,
                     show_progress="hidden", api_name=f"label_{action}")

    def ask_own(session: LabelSession, prompt: str):
        session = require(session)
        try:
            first, second = draft_two_responses(model.get(timeout=0), prompt)
        except (ValueError, RuntimeError) as exc:
            raise gr.Error(str(exc)) from None
        session.add_own(prompt.strip(), first, second)
        return "", *pair_view(session)

    own_btn.click(gpu(ask_own), inputs=[session_state, own_prompt], outputs=[own_prompt, *label_outputs],
                  concurrency_id="model", concurrency_limit=fit_concurrency, api_name="ask_own")

    def import_pairs(session: LabelSession, path: str):
        session = require(session)
        name = Path(path).name
        try:
            pairs = parse_pairs_text(Path(path).read_text(encoding="utf-8"), path=name)
        except (PairFileError, UnicodeDecodeError) as exc:
            return f'<div class="notice error">{escape(str(exc))}</div>', *pair_view(session)
        if not pairs:
            return f'<div class="notice error">{escape(name)}: no pairs in the file</div>', *pair_view(session)
        session.add_imported(pairs)
        return f'<div class="notice ok">Imported {len(pairs)} pair(s) from {escape(name)}.</div>', *pair_view(session)

    import_btn.upload(import_pairs, inputs=[session_state, import_btn], outputs=[import_msg, *label_outputs],
                      api_name="import_pairs")

    def export_labels(session: LabelSession):
        session = require(session)
        if not session.labels:
            raise gr.Error("label at least one pair first")
        path = Path(tempfile.mkdtemp(prefix="synth-labels-")) / "my_labels.jsonl"
        save_pairs(session.pairs(), path)
        return gr.File(value=str(path), visible=True)

    export_btn.click(export_labels, inputs=session_state, outputs=export_file, api_name="export_labels")

    # ---- run ---------------------------------------------------------------------------------------------------
    def result_values(estimator: SynthesizeMe) -> list[Any]:
        artifact = estimator.artifact_
        path = Path(tempfile.mkdtemp(prefix="synth-artifact-")) / "synthesizeme_artifact.json"
        estimator.save(path)
        return [persona_card(artifact), demos_html(artifact.get("demos", [])),
                messages_text(estimator.get_llm_judge_prompt()), estimator.get_generation_prompt(), str(path)]

    def run_fit(session: LabelSession, settings: str, share: bool):
        session = require(session)
        pairs = session.pairs()
        if len(pairs) < MIN_LABELS:
            raise gr.Error(f"label at least {MIN_LABELS} pairs first ({len(pairs)} so far)")
        try:
            lm = model.get(timeout=0)
        except RuntimeError as exc:
            raise gr.Error(str(exc)) from None
        session.cancel.clear()
        view = RunView()
        keep = [gr.skip()] * (len(result_outputs) + 1)
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
        message = contribute_artifact(session) if share else gr.skip()
        yield view.progress_html(), view.log_html(), gr.Button(interactive=True), *result_values(estimator), message

    start_btn.click(gpu(run_fit), inputs=[session_state, mode, opt_in],
                    outputs=[run_progress, run_log, start_btn, *result_outputs, opt_in_msg],
                    concurrency_id="model", concurrency_limit=fit_concurrency, api_name="run_fit")

    def cancel_fit(session: LabelSession):
        session = require(session)
        session.cancel.set()

    cancel_btn.click(cancel_fit, inputs=session_state, outputs=None, queue=False, api_name="cancel_fit")

    def reload_artifact(session: LabelSession, path: str):
        session = require(session)
        try:
            session.fitted = SynthesizeMe.load(path)
        except ValueError as exc:
            raise gr.Error(str(exc).replace(str(Path(path).parent) + "/", "")) from None
        return result_values(session.fitted)

    reload_btn.upload(reload_artifact, inputs=[session_state, reload_btn], outputs=result_outputs,
                      api_name="reload_artifact")

    # ---- population opt-in -----------------------------------------------------------------------------------
    def contribute_artifact(session: LabelSession) -> str:
        if session.fitted is None:
            return '<div class="notice">Your persona will be added once a run finishes.</div>'
        if contribute is None:
            return '<div class="notice error">The population store is not available in this deployment.</div>'
        if session.contributed is session.fitted:
            return '<div class="notice ok">Already added.</div>'
        session.contributed = session.fitted
        return f'<div class="notice ok">{escape(contribute(session.fitted.artifact_))}</div>'

    def on_opt_in(session: LabelSession, share: bool):
        session = require(session)
        return contribute_artifact(session) if share else ""

    opt_in.input(on_opt_in, inputs=[session_state, opt_in], outputs=opt_in_msg, api_name="opt_in")

    # ---- test the judge --------------------------------------------------------------------------------------
    by_id = {p.id: p for p in bank}

    def fill_test(pair_id: str | None):
        if not pair_id:
            return gr.skip(), gr.skip(), gr.skip()
        pair = by_id[pair_id]
        return pair.prompt, pair.responses[0], pair.responses[1]

    bank_pick.change(fill_test, inputs=bank_pick, outputs=[test_prompt, test_a, test_b], queue=False,
                     api_name="pick_test_pair")

    def test_judge(session: LabelSession, prompt: str, reply_a: str, reply_b: str):
        session = require(session)
        if session.fitted is None:
            raise gr.Error("run SynthesizeMe or reload an artifact first")
        if not (prompt.strip() and reply_a.strip() and reply_b.strip()):
            raise gr.Error("fill in the prompt and both replies")
        try:
            lm = model.get(timeout=0)
        except RuntimeError as exc:
            raise gr.Error(str(exc)) from None
        session.fitted.lm = lm
        personal = session.fitted.predict_proba(prompt, reply_a, reply_b)
        default = DefaultJudge(lm=lm, reasoning_tokens=session.fitted.reasoning_tokens).predict_proba(
            prompt, reply_a, reply_b)
        return verdicts_html(personal, default)

    test_btn.click(gpu(test_judge), inputs=[session_state, test_prompt, test_a, test_b], outputs=test_out,
                   concurrency_id="model", concurrency_limit=fit_concurrency, api_name="test_judge")

    return session_state
