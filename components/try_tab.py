"""The "Try it yourself" tab: label pairs, watch SynthesizeMe fit live, then read, download and test the judge.

Layout and wiring only: the handlers are in ``components.try_handlers``, labeling state in ``components.labeling``,
the method in ``synth``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import gradio as gr

from components import try_handlers as on
from components.labeling import BankPair, load_bank, progress_text
from components.model_handle import ModelHandle

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


@dataclass
class TryTab:
    """Handles to the tab's components, in page order (the layout builds them, the wiring connects them)."""

    session: gr.State
    status: gr.Markdown
    progress: gr.Markdown
    prompt_html: gr.HTML
    left_html: gr.HTML
    right_html: gr.HTML
    left_btn: gr.Button
    skip_btn: gr.Button
    undo_btn: gr.Button
    right_btn: gr.Button
    own_prompt: gr.Textbox
    own_btn: gr.Button
    import_btn: gr.UploadButton
    export_btn: gr.Button
    import_msg: gr.HTML
    export_file: gr.File
    labels_list: gr.HTML
    mode: gr.Radio
    start_btn: gr.Button
    cancel_btn: gr.Button
    run_progress: gr.HTML
    run_log: gr.HTML
    persona_html: gr.HTML
    demos_view: gr.HTML
    judge_prompt: gr.Textbox
    generation_prompt: gr.Textbox
    artifact_file: gr.File
    reload_btn: gr.UploadButton
    opt_in: gr.Checkbox
    opt_in_msg: gr.HTML
    bank_pick: gr.Dropdown
    test_prompt: gr.Textbox
    test_a: gr.Textbox
    test_b: gr.Textbox
    test_btn: gr.Button
    test_out: gr.HTML

    @property
    def label_outputs(self) -> list[gr.components.Component]:
        """What ``try_handlers.pair_view`` renders, in its order."""
        return [self.progress, self.prompt_html, self.left_html, self.right_html, self.labels_list]

    @property
    def result_outputs(self) -> list[gr.components.Component]:
        """What ``try_handlers.result_values`` renders, in its order."""
        return [self.persona_html, self.demos_view, self.judge_prompt, self.generation_prompt, self.artifact_file]


def build_try_tab(demo: gr.Blocks, model: ModelHandle, bank: list[BankPair] | None = None,
                  gpu: Identity = _identity, contribute: on.Contribute | None = None,
                  fit_concurrency: int = 1) -> gr.State:
    """Lay out the tab inside the current Blocks context, wire its events, and return the session state.

    ``gpu`` wraps the model-heavy handlers (``spaces.GPU`` on Hugging Face); ``contribute`` adds an opted-in
    artifact to the shared population and returns a message.
    """
    bank = bank if bank is not None else load_bank()
    tab = lay_out(model.status(), bank)
    wire(demo, tab, model, bank, gpu=gpu, contribute=contribute, fit_concurrency=fit_concurrency)
    return tab.session


def lay_out(model_status: str, bank: list[BankPair]) -> TryTab:
    """Create the tab's components inside the current Blocks context; no events yet."""
    session = gr.State(None)

    status = gr.Markdown(model_status, elem_id="model-status", elem_classes=["model-status"])

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

    return TryTab(
        session=session, status=status,
        progress=progress, prompt_html=prompt_html, left_html=left_html, right_html=right_html,
        left_btn=left_btn, skip_btn=skip_btn, undo_btn=undo_btn, right_btn=right_btn,
        own_prompt=own_prompt, own_btn=own_btn, import_btn=import_btn, export_btn=export_btn, import_msg=import_msg,
        export_file=export_file, labels_list=labels_list,
        mode=mode, start_btn=start_btn, cancel_btn=cancel_btn, run_progress=run_progress, run_log=run_log,
        persona_html=persona_html, demos_view=demos_view, judge_prompt=judge_prompt,
        generation_prompt=generation_prompt, artifact_file=artifact_file, reload_btn=reload_btn, opt_in=opt_in,
        opt_in_msg=opt_in_msg,
        bank_pick=bank_pick, test_prompt=test_prompt, test_a=test_a, test_b=test_b, test_btn=test_btn,
        test_out=test_out)


def wire(demo: gr.Blocks, tab: TryTab, model: ModelHandle, bank: list[BankPair], *, gpu: Identity,
         contribute: on.Contribute | None, fit_concurrency: int) -> None:
    """Connect each event to its handler in ``components.try_handlers``, binding the app's shared parts."""
    model_bound = {"concurrency_id": "model", "concurrency_limit": fit_concurrency}
    light = {"concurrency_limit": None, "show_progress": "hidden"}

    # ---- labeling --------------------------------------------------------------------------------------------
    demo.load(partial(on.start_session, bank), outputs=[tab.session, *tab.label_outputs], queue=False,
              api_name="start_session")
    demo.load(partial(on.wait_for_model, model), outputs=tab.status, api_name="model_status", **light)
    for action in on.LABEL_ACTIONS:
        button = getattr(tab, f"{action}_btn")
        button.click(partial(on.label, action), inputs=tab.session, outputs=tab.label_outputs,
                     api_name=f"label_{action}", **light)
    tab.own_btn.click(gpu(partial(on.ask_own, model)), inputs=[tab.session, tab.own_prompt],
                      outputs=[tab.own_prompt, *tab.label_outputs], api_name="ask_own", **model_bound)
    tab.import_btn.upload(on.import_pairs, inputs=[tab.session, tab.import_btn],
                          outputs=[tab.import_msg, *tab.label_outputs], api_name="import_pairs")
    tab.export_btn.click(on.export_labels, inputs=tab.session, outputs=tab.export_file, api_name="export_labels")

    # ---- run -------------------------------------------------------------------------------------------------
    tab.start_btn.click(gpu(partial(on.run_fit, model, contribute)), inputs=[tab.session, tab.mode, tab.opt_in],
                        outputs=[tab.run_progress, tab.run_log, tab.start_btn, *tab.result_outputs, tab.opt_in_msg],
                        api_name="run_fit", **model_bound)
    tab.cancel_btn.click(on.cancel_fit, inputs=tab.session, outputs=None, queue=False, api_name="cancel_fit")
    tab.reload_btn.upload(on.reload_artifact, inputs=[tab.session, tab.reload_btn], outputs=tab.result_outputs,
                          api_name="reload_artifact")
    tab.opt_in.input(partial(on.opt_in, contribute), inputs=[tab.session, tab.opt_in], outputs=tab.opt_in_msg,
                     api_name="opt_in")

    # ---- test the judge --------------------------------------------------------------------------------------
    tab.bank_pick.change(partial(on.fill_test_pair, bank), inputs=tab.bank_pick,
                         outputs=[tab.test_prompt, tab.test_a, tab.test_b], queue=False, api_name="pick_test_pair")
    tab.test_btn.click(gpu(partial(on.test_judge, model)),
                       inputs=[tab.session, tab.test_prompt, tab.test_a, tab.test_b], outputs=tab.test_out,
                       api_name="test_judge", **model_bound)
