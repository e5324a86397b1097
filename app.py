"""SynthesizeMe Studio: the Gradio app (``python app.py`` or ``synth app``). Thin: it only assembles components."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
import gradio as gr
from synth.assets import asset_path

from components.insights_tab import build_insights_tab
from components.model_handle import ModelHandle
from components.try_tab import SHORTCUTS_JS, build_try_tab
from synth.lm import build_lm
from synth.lm.gpu import gpu_task
from synth.store import PersonaRecord, PersonaStore, new_user_id

QUEUE_MAX_SIZE = int(os.environ.get("SYNTH_QUEUE_MAX_SIZE", "32"))
FIT_CONCURRENCY = int(os.environ.get("SYNTH_FIT_CONCURRENCY", "1"))  # model-bound events running at once
DEFAULT_CONCURRENCY = 4  # light events (labeling, uploads) running at once
GPU_SECONDS = int(os.environ.get("SYNTH_GPU_SECONDS", "240"))  # one ZeroGPU slot holds a whole fit


def data_dir() -> Path:
    return Path(os.environ.get("SYNTH_DATA_DIR", Path.home() / ".cache" / "synth" / "studio"))


def persona_store() -> PersonaStore:
    """The population the insights tab reads and opted-in visitors join (SQLite, WAL)."""
    return PersonaStore(os.environ.get("SYNTH_STORE", data_dir() / "personas.sqlite"))


def population_contributor(store: PersonaStore) -> Callable[[dict[str, Any]], str]:
    """Add an opted-in artifact to the store under a fresh anonymous id, with its reasoning and pairs."""

    def contribute(artifact: dict[str, Any]) -> str:
        user_id = new_user_id()
        pairs = {split: [{**row, "user_id": user_id} for row in rows]
                 for split, rows in artifact.get("pairs", {}).items()}
        store.add(PersonaRecord(user_id=user_id, persona=artifact.get("persona") or "", source="demo", consent=True,
                                model=artifact.get("model", ""), artifact={**artifact, "pairs": pairs}))
        return "Thank you! Your persona joined the population anonymously; refresh the insights tab to see it."

    return contribute


def build_app(lm_factory: Callable[[], dspy.BaseLM] | None = None) -> tuple[gr.Blocks, ModelHandle]:
    """The Blocks and its model handle; ``lm_factory`` defaults to ``build_lm()`` ($SYNTH_MODEL or offline)."""
    model = ModelHandle(lm_factory or build_lm)
    store = persona_store()
    with gr.Blocks(title="SynthesizeMe Studio") as demo:
        gr.HTML('<div class="hero"><h1>SynthesizeMe Studio</h1><p>Label a handful of reply pairs and watch '
                'SynthesizeMe build a personalized LLM judge for you: reasoning verified against your choices, '
                'a persona, and the demos that predict you best (Ryan et al., ACL 2025).</p></div>')
        with gr.Tabs():
            with gr.Tab("Try it yourself", id="try"):
                session = build_try_tab(demo, model, gpu=gpu_task(duration=GPU_SECONDS),
                                        contribute=population_contributor(store), fit_concurrency=FIT_CONCURRENCY)
            with gr.Tab("Population insights", id="insights"):
                build_insights_tab(store, persona_state=session)
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=DEFAULT_CONCURRENCY)
    return demo, model


def launch(demo: gr.Blocks, **kwargs: Any):
    """Launch with the studio's look (CSS, fonts, keyboard shortcuts)."""
    return demo.launch(css_paths=[asset_path("style.css")], head=SHORTCUTS_JS, theme=gr.themes.Soft(
        primary_hue="indigo", neutral_hue="slate"), **kwargs)


def main(server_name: str | None = None, server_port: int | None = None, share: bool = False) -> None:
    demo, model = build_app()
    model.start()
    launch(demo, server_name=server_name, server_port=server_port, share=share)


if __name__ == "__main__":
    main()
