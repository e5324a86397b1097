"""SynthesizeMe Studio: the Gradio app (``python app.py`` or ``synth app``). Thin: it only assembles components."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dspy
import gradio as gr

from components.model_handle import ModelHandle
from components.try_tab import SHORTCUTS_JS, build_try_tab
from synth.data import atomic_write_text
from synth.lm import build_lm
from synth.lm.gpu import gpu_task

ASSETS = Path(__file__).resolve().parent / "assets"
QUEUE_MAX_SIZE = int(os.environ.get("SYNTH_QUEUE_MAX_SIZE", "32"))
FIT_CONCURRENCY = int(os.environ.get("SYNTH_FIT_CONCURRENCY", "1"))  # model-bound events running at once
DEFAULT_CONCURRENCY = 4  # light events (labeling, uploads) running at once
GPU_SECONDS = int(os.environ.get("SYNTH_GPU_SECONDS", "240"))  # one ZeroGPU slot holds a whole fit


def data_dir() -> Path:
    return Path(os.environ.get("SYNTH_DATA_DIR", Path.home() / ".cache" / "synth" / "studio"))


def population_contributor() -> Callable[[dict[str, Any]], str]:
    """Add an opted-in artifact to the population store; until the store exists, keep the artifact on disk."""
    def keep_artifact(artifact: dict[str, Any]) -> str:
        anonymous = _anonymised(artifact)
        path = data_dir() / "contributed" / f"{anonymous['contributor']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(anonymous, ensure_ascii=False, indent=2) + "\n")
        return "Thank you! Your persona was saved anonymously and will join the population."

    return keep_artifact


def _anonymised(artifact: dict[str, Any]) -> dict[str, Any]:
    contributor = uuid.uuid4().hex[:12]
    pairs = {split: [{**row, "user_id": contributor} for row in rows]
             for split, rows in artifact.get("pairs", {}).items()}
    return {**artifact, "pairs": pairs, "contributor": contributor}


def build_insights() -> None:
    gr.Markdown("### Population insights\nThe population view is being wired in; it will show how personas "
                "cluster across many users, including the ones contributed from the first tab.",
                elem_classes=["section-title"])


def build_app(lm_factory: Callable[[], dspy.BaseLM] | None = None) -> tuple[gr.Blocks, ModelHandle]:
    """The Blocks and its model handle; ``lm_factory`` defaults to ``build_lm()`` ($SYNTH_MODEL or offline)."""
    model = ModelHandle(lm_factory or build_lm)
    with gr.Blocks(title="SynthesizeMe Studio") as demo:
        gr.HTML('<div class="hero"><h1>SynthesizeMe Studio</h1><p>Label a handful of reply pairs and watch '
                'SynthesizeMe build a personalized LLM judge for you: reasoning verified against your choices, '
                'a persona, and the demos that predict you best (Ryan et al., ACL 2025).</p></div>')
        with gr.Tabs():
            with gr.Tab("Try it yourself", id="try"):
                build_try_tab(demo, model, gpu=gpu_task(duration=GPU_SECONDS), contribute=population_contributor(),
                              fit_concurrency=FIT_CONCURRENCY)
            with gr.Tab("Population insights", id="insights"):
                build_insights()
    demo.queue(max_size=QUEUE_MAX_SIZE, default_concurrency_limit=DEFAULT_CONCURRENCY)
    return demo, model


def launch(demo: gr.Blocks, **kwargs: Any):
    """Launch with the studio's look (CSS, fonts, keyboard shortcuts)."""
    return demo.launch(css_paths=[ASSETS / "style.css"], head=SHORTCUTS_JS, theme=gr.themes.Soft(
        primary_hue="indigo", neutral_hue="slate"), **kwargs)


def main(server_name: str | None = None, server_port: int | None = None, share: bool = False) -> None:
    demo, model = build_app()
    model.start()
    launch(demo, server_name=server_name, server_port=server_port, share=share)


if __name__ == "__main__":
    main()
