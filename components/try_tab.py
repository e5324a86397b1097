"""The "Try it yourself" tab: label pairs, watch SynthesizeMe fit live, then read, rate, download and test the judge,
and see what the persona changes in the model's answers.

Layout and wiring only: the handlers are in ``components.try_handlers``, labeling state in ``components.labeling``,
the method in ``synth``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import gradio as gr

from components import try_handlers as on
from components.labeling import progress_text
from components.limits import client_address

# Keyboard shortcuts for labeling (ignored while typing and when the Try tab is hidden), and the label buttons'
# guard: a click disables them until the next pair is on screen, so each click answers the pair it was shown
# with (its id travels with the click) and none is dropped or applied to a pair nobody has seen yet.
SHORTCUTS_JS = """
<script>
// What a label event changes: the pair on screen and the list of labels (not the progress texts Gradio shows
// around a component while its event is pending).
window.synthLabelState = () => {
  const prompt = document.querySelector('#pair-prompt .prompt-card');
  const left = document.querySelector('#reply-left .reply-card');
  const labels = document.querySelectorAll('#labels-list li');
  return [prompt ? prompt.innerText : '', left ? left.innerText : '', labels.length].join('\\u0000');
};
window.synthLabelButtons = (enabled) => {
  window.synthLabelPending = enabled ? null : window.synthLabelState();
  for (const id of ['btn-left', 'btn-right', 'btn-skip', 'btn-undo']) {
    const button = document.getElementById(id);
    if (button) button.disabled = !enabled;
  }
};
document.addEventListener('click', (event) => {
  const button = event.target.closest && event.target.closest('#btn-left, #btn-right, #btn-skip, #btn-undo');
  if (button && !button.disabled) window.synthLabelButtons(false);
}, true);
// The buttons take clicks again the moment the answer is on screen (the event's .then is the fallback).
new MutationObserver(() => {
  const pending = window.synthLabelPending;
  if (pending !== null && pending !== undefined && window.synthLabelState() !== pending) {
    window.synthLabelButtons(true);
  }
}).observe(document.documentElement, {subtree: true, childList: true, characterData: true});
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
ENABLE_LABEL_BUTTONS_JS = "() => { window.synthLabelButtons && window.synthLabelButtons(true); }"


@dataclass
class TryTab:
    """Handles to the tab's components, in page order (the layout builds them, the wiring connects them)."""

    session: gr.State
    status: gr.Markdown
    progress: gr.Markdown
    prompt_html: gr.HTML
    left_html: gr.HTML
    right_html: gr.HTML
    shown_pair: gr.Textbox
    left_btn: gr.Button
    skip_btn: gr.Button
    undo_btn: gr.Button
    right_btn: gr.Button
    own_prompt: gr.Textbox
    own_btn: gr.Button
    own_msg: gr.HTML
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
    ratings: list[gr.Radio]
    fidelity: gr.HTML
    reload_btn: gr.UploadButton
    reload_msg: gr.HTML
    opt_in: gr.Checkbox
    share_evidence: gr.Checkbox
    opt_in_msg: gr.HTML
    deletion_code: gr.Textbox
    remove_btn: gr.Button
    remove_msg: gr.HTML
    bank_pick: gr.Dropdown
    test_prompt: gr.Textbox
    test_a: gr.Textbox
    test_b: gr.Textbox
    test_btn: gr.Button
    test_cancel_btn: gr.Button
    test_out: gr.HTML
    answer_prompt: gr.Textbox
    answer_btn: gr.Button
    answer_cancel_btn: gr.Button
    answer_first: gr.HTML
    answer_second: gr.HTML
    answer_msg: gr.HTML
    prefer_first_btn: gr.Button
    prefer_second_btn: gr.Button
    add_choice_btn: gr.Button

    @property
    def label_outputs(self) -> list[gr.components.Component]:
        """What ``try_handlers.pair_view`` renders, in its order."""
        return [self.progress, self.prompt_html, self.left_html, self.right_html, self.labels_list, self.shown_pair]

    @property
    def result_outputs(self) -> list[gr.components.Component]:
        """What ``try_handlers.result_values`` renders, in its order."""
        return [self.persona_html, self.demos_view, self.judge_prompt, self.generation_prompt, self.artifact_file,
                *self.ratings, self.fidelity]

    @property
    def answer_outputs(self) -> list[gr.components.Component]:
        """What ``try_handlers.answer_twice`` and ``prefer_answer`` render, in their order."""
        return [self.answer_first, self.answer_second, self.answer_msg, self.prefer_first_btn,
                self.prefer_second_btn, self.add_choice_btn]


def build_try_tab(demo: gr.Blocks, parts: on.TryParts) -> gr.State:
    """Lay out the tab inside the current Blocks context, wire its events, and return the session state."""
    tab = lay_out(parts)
    wire(demo, tab, parts)
    return tab.session


def lay_out(parts: on.TryParts) -> TryTab:
    """Create the tab's components inside the current Blocks context; no events yet."""
    limits = parts.limits
    # A session unused for a day is dropped with its files (a closed page drops it at once, see ``wire``).
    session = gr.State(None, time_to_live=24 * 3600, delete_callback=parts.visitors.forget)

    status = gr.Markdown(parts.model.status(), elem_id="model-status", elem_classes=["model-status"])

    gr.Markdown("### 1 · Tell us which reply you prefer", elem_classes=["section-title"])
    progress = gr.Markdown(progress_text(0), elem_id="label-progress", elem_classes=["label-progress"])
    prompt_html = gr.HTML(elem_id="pair-prompt")
    with gr.Row(equal_height=True):
        left_html = gr.HTML(elem_id="reply-left")
        right_html = gr.HTML(elem_id="reply-right")
    shown_pair = gr.Textbox(visible="hidden", elem_id="shown-pair")  # the pair on screen: sent with each click
    with gr.Row(elem_classes=["label-buttons"]):
        left_btn = gr.Button("◀ Left is better  (←)", elem_id="btn-left", variant="primary")
        skip_btn = gr.Button("Skip  (S)", elem_id="btn-skip", variant="secondary")
        undo_btn = gr.Button("Undo  (U)", elem_id="btn-undo", variant="secondary")
        right_btn = gr.Button("Right is better ▶  (→)", elem_id="btn-right", variant="primary")

    with gr.Accordion("Ask your own prompt", open=False):
        own_prompt = gr.Textbox(label="Your prompt", lines=2, max_length=limits.max_field_chars, elem_id="own-prompt",
                                placeholder="e.g. How should I prepare for a job interview?")
        own_btn = gr.Button("Draft two replies to label", elem_id="btn-own")
        own_msg = gr.HTML(elem_id="own-msg")
    with gr.Accordion("Import or export labels", open=False):
        gr.Markdown(f"Import a JSONL file or JSON list of rows `{{context, chosen, rejected}}` (the official "
                    f"SynthesizeMe / PersonalRewardBench format), up to {limits.max_upload_mb} MB and "
                    f"{limits.max_pairs} pairs. Imported pairs count as labels; they stay in your visit.")
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
    with gr.Group(elem_id="is-this-you"):
        gr.Markdown("#### Is this you?  \nFor each statement of your persona: is it you? Your answers give your "
                    "persona's fidelity (the share of “that's me”).")
        ratings = [gr.Radio(visible=False, elem_id=f"rate-{index}", elem_classes=["rate"])
                   for index in range(on.MAX_RATED)]
        fidelity = gr.HTML(elem_id="fidelity-line")
    demos_view = gr.HTML(elem_id="demos")
    with gr.Accordion("Prompts to reuse anywhere", open=False):
        judge_prompt = gr.Textbox(label="Judge prompt (chat messages)", lines=8, max_lines=20, buttons=["copy"],
                                  interactive=False, elem_id="judge-prompt")
        generation_prompt = gr.Textbox(label="Generation prompt (system prompt)", lines=6, max_lines=20,
                                       buttons=["copy"], interactive=False, elem_id="generation-prompt")
    with gr.Row():
        artifact_file = gr.File(label="Artifact JSON", interactive=False, elem_id="artifact-file")
        reload_btn = gr.UploadButton("Reload a saved artifact (.json)", file_types=[".json"], elem_id="btn-reload")
    reload_msg = gr.HTML(elem_id="reload-msg")
    with gr.Group(elem_id="opt-in-group"):
        opt_in = gr.Checkbox(label="Add my persona anonymously to the population shown in “Population insights” "
                                   "(the persona and its statements only)", value=False, elem_id="opt-in")
        share_evidence = gr.Checkbox(label="Also show the evidence behind it: the reasoning about the bank's pairs, "
                                           "those pairs, and my answers to “Is this you?” (never imported pairs or "
                                           "my own prompts)", value=False, elem_id="share-evidence")
        opt_in_msg = gr.HTML(elem_id="opt-in-msg")
        with gr.Row():
            deletion_code = gr.Textbox(label="Deletion code", placeholder="shown when your persona joins",
                                       max_length=64, elem_id="deletion-code", scale=3)
            remove_btn = gr.Button("Remove my persona", variant="secondary", elem_id="btn-remove", scale=1)
        remove_msg = gr.HTML(elem_id="remove-msg")

    with gr.Accordion("Test your judge", open=False):
        bank_pick = gr.Dropdown(choices=[(f"{p.topic}: {p.prompt[:70]}", p.id) for p in parts.bank], value=None,
                                label="Pick a pair from the bank (or write your own below)", elem_id="test-pick")
        test_prompt = gr.Textbox(label="Prompt", lines=2, max_length=limits.max_field_chars, elem_id="test-prompt")
        with gr.Row():
            test_a = gr.Textbox(label="Reply A", lines=5, max_length=limits.max_field_chars, elem_id="test-a")
            test_b = gr.Textbox(label="Reply B", lines=5, max_length=limits.max_field_chars, elem_id="test-b")
        with gr.Row():
            test_btn = gr.Button("Compare verdicts", elem_id="btn-test")
            test_cancel_btn = gr.Button("Cancel", variant="stop", elem_id="btn-test-cancel", scale=0, min_width=120)
        test_out = gr.HTML(elem_id="test-out")

    with gr.Accordion("What your persona changes", open=False):
        gr.Markdown("Ask anything: the model answers twice, once plainly and once with your persona's generation "
                    "prompt, in a random order. Say which you prefer; then see which was which, and add your choice "
                    "to your labels.")
        answer_prompt = gr.Textbox(label="Your prompt", lines=2, max_length=limits.max_field_chars,
                                   elem_id="answer-prompt", placeholder="e.g. Plan a weekend in Lisbon for me.")
        with gr.Row():
            answer_btn = gr.Button("Answer twice", elem_id="btn-answer")
            answer_cancel_btn = gr.Button("Cancel", variant="stop", elem_id="btn-answer-cancel", scale=0,
                                          min_width=120)
        with gr.Row(equal_height=True):
            answer_first = gr.HTML(elem_id="answer-1")
            answer_second = gr.HTML(elem_id="answer-2")
        with gr.Row():
            prefer_first_btn = gr.Button("I prefer answer 1", visible=False, elem_id="btn-prefer-1")
            prefer_second_btn = gr.Button("I prefer answer 2", visible=False, elem_id="btn-prefer-2")
        answer_msg = gr.HTML(elem_id="answer-msg")
        add_choice_btn = gr.Button("Add my choice to my labels", visible=False, variant="primary",
                                   elem_id="btn-add-choice")

    return TryTab(
        session=session, status=status,
        progress=progress, prompt_html=prompt_html, left_html=left_html, right_html=right_html, shown_pair=shown_pair,
        left_btn=left_btn, skip_btn=skip_btn, undo_btn=undo_btn, right_btn=right_btn,
        own_prompt=own_prompt, own_btn=own_btn, own_msg=own_msg, import_btn=import_btn, export_btn=export_btn,
        import_msg=import_msg, export_file=export_file, labels_list=labels_list,
        mode=mode, start_btn=start_btn, cancel_btn=cancel_btn, run_progress=run_progress, run_log=run_log,
        persona_html=persona_html, demos_view=demos_view, judge_prompt=judge_prompt,
        generation_prompt=generation_prompt, artifact_file=artifact_file, ratings=ratings, fidelity=fidelity,
        reload_btn=reload_btn, reload_msg=reload_msg, opt_in=opt_in, share_evidence=share_evidence,
        opt_in_msg=opt_in_msg, deletion_code=deletion_code, remove_btn=remove_btn, remove_msg=remove_msg,
        bank_pick=bank_pick, test_prompt=test_prompt, test_a=test_a, test_b=test_b, test_btn=test_btn,
        test_cancel_btn=test_cancel_btn, test_out=test_out, answer_prompt=answer_prompt, answer_btn=answer_btn,
        answer_cancel_btn=answer_cancel_btn, answer_first=answer_first, answer_second=answer_second,
        answer_msg=answer_msg, prefer_first_btn=prefer_first_btn, prefer_second_btn=prefer_second_btn,
        add_choice_btn=add_choice_btn)


def wire(demo: gr.Blocks, tab: TryTab, parts: on.TryParts) -> None:
    """Connect each event to its handler in ``components.try_handlers``, binding the app's shared parts.

    Model-bound events queue in the handlers' own line (``ready_lm``: the model's load, then ``ModelGate``, which
    caps each visit and address), so Gradio runs them without a concurrency limit of its own; events that only
    touch one visitor's session are bounded by the limits and never wait in Gradio's queue either, so no client can
    fill it with them.
    """
    unbounded = {"concurrency_limit": None}
    light = {"concurrency_limit": None, "show_progress": "hidden"}

    # ---- labeling --------------------------------------------------------------------------------------------
    def start_session(request: gr.Request) -> tuple:
        return on.start_session(parts, client=client_address(request), session_hash=request.session_hash)

    def leave(request: gr.Request) -> None:
        parts.visitors.leave(request.session_hash)

    demo.load(start_session, outputs=[tab.session, *tab.label_outputs], queue=False, api_name="start_session")
    demo.unload(leave)
    demo.load(partial(on.wait_for_model, parts.model), outputs=tab.status, api_name="model_status", **light)
    for action in on.LABEL_ACTIONS:
        button = getattr(tab, f"{action}_btn")
        button.click(partial(on.label, parts, action), inputs=[tab.session, tab.shown_pair],
                     outputs=tab.label_outputs, api_name=f"label_{action}", trigger_mode="multiple", **light
                     ).then(None, js=ENABLE_LABEL_BUTTONS_JS)
    tab.own_btn.click(partial(on.ask_own, parts), inputs=[tab.session, tab.own_prompt],
                      outputs=[tab.own_prompt, tab.own_msg, *tab.label_outputs], api_name="ask_own", **unbounded)
    tab.import_btn.upload(partial(on.import_pairs, parts), inputs=[tab.session, tab.import_btn],
                          outputs=[tab.import_msg, *tab.label_outputs], api_name="import_pairs", **unbounded)
    tab.export_btn.click(partial(on.export_labels, parts), inputs=tab.session, outputs=[tab.export_file,
                                                                                        tab.import_msg],
                         api_name="export_labels", **unbounded)

    # ---- run -------------------------------------------------------------------------------------------------
    tab.start_btn.click(partial(on.run_fit, parts), inputs=[tab.session, tab.mode, tab.opt_in, tab.share_evidence],
                        outputs=[tab.run_progress, tab.run_log, tab.start_btn, *tab.result_outputs, tab.opt_in_msg],
                        api_name="run_fit", **unbounded)
    for cancel_button in (tab.cancel_btn, tab.test_cancel_btn, tab.answer_cancel_btn):
        cancel_button.click(on.cancel, inputs=tab.session, outputs=None, queue=False, api_name="cancel")
    tab.reload_btn.upload(partial(on.reload_artifact, parts), inputs=[tab.session, tab.reload_btn],
                          outputs=[*tab.result_outputs, tab.reload_msg], api_name="reload_artifact", **unbounded)
    for index, radio in enumerate(tab.ratings):
        radio.input(partial(on.rate, parts, index), inputs=[tab.session, radio, tab.share_evidence],
                    outputs=tab.fidelity, api_name=f"rate_{index}", **light)

    # ---- population opt-in ---------------------------------------------------------------------------------
    tab.opt_in.input(partial(on.opt_in, parts), inputs=[tab.session, tab.opt_in, tab.share_evidence],
                     outputs=tab.opt_in_msg, api_name="opt_in", **unbounded)
    tab.share_evidence.input(partial(on.share_evidence_changed, parts), inputs=[tab.session, tab.share_evidence],
                             outputs=tab.opt_in_msg, api_name="share_evidence", **unbounded)
    tab.opt_in_msg.change(None, inputs=tab.opt_in_msg, outputs=tab.deletion_code, js=COPY_DELETION_CODE_JS)
    tab.remove_btn.click(partial(on.remove_persona, parts), inputs=[tab.session, tab.deletion_code],
                         outputs=tab.remove_msg, api_name="remove_persona", **unbounded)

    # ---- test the judge --------------------------------------------------------------------------------------
    tab.bank_pick.change(partial(on.fill_test_pair, parts.bank), inputs=tab.bank_pick,
                         outputs=[tab.test_prompt, tab.test_a, tab.test_b], queue=False, api_name="pick_test_pair")
    tab.test_btn.click(partial(on.test_judge, parts), inputs=[tab.session, tab.test_prompt, tab.test_a, tab.test_b],
                       outputs=tab.test_out, api_name="test_judge", **unbounded)

    # ---- what your persona changes ----------------------------------------------------------------------------
    tab.answer_btn.click(partial(on.answer_twice, parts), inputs=[tab.session, tab.answer_prompt],
                         outputs=tab.answer_outputs, api_name="answer_twice", **unbounded)
    for first, button in ((True, tab.prefer_first_btn), (False, tab.prefer_second_btn)):
        button.click(partial(on.prefer_answer, parts, first), inputs=tab.session, outputs=tab.answer_outputs,
                     api_name=f"prefer_answer_{1 if first else 2}", **light)
    tab.add_choice_btn.click(partial(on.add_answer_choice, parts), inputs=tab.session,
                             outputs=[tab.answer_msg, *tab.label_outputs], api_name="add_answer_choice", **light)


# The deletion code shown in the opt-in message goes into the Remove field, so "Remove my persona" is one click.
COPY_DELETION_CODE_JS = """(message) => {
  const match = /class="deletion-code">([^<]+)</.exec(message || '');
  return match ? match[1] : (document.querySelector('#deletion-code textarea, #deletion-code input') || {}).value;
}"""
