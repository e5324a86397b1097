"""SynthesizeMe Studio: assembles the tabs into one Gradio app (``synth app``, or ``app.py`` on a Space).

Settings come from the environment once, into a ``StudioSettings`` passed down; nothing here reads
``os.environ`` at import time, so tests and the CLI can build apps with different settings in one process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy
import gradio as gr

from components.insights_tab import build_insights_tab
from components.model_handle import ModelHandle
from components.try_tab import SHORTCUTS_JS, build_try_tab
from synth.lm import build_lm
from synth.lm.gpu import gpu_task
from synth.paths import asset_path, data_dir
from synth.store import PersonaRecord, PersonaStore, new_user_id


@dataclass(frozen=True)
class StudioSettings:
    """Deployment settings of the studio (each read from the environment variable named in the README)."""

    store_path: Path  # $SYNTH_STORE: the population's SQLite file
    queue_max_size: int = 32  # $SYNTH_QUEUE_MAX_SIZE: events waiting at most, all visitors together
    fit_concurrency: int = 1  # $SYNTH_FIT_CONCURRENCY: model-bound events running at once
    default_concurrency: int = 4  # light events (labeling, uploads) running at once
    gpu_seconds: int = 240  # $SYNTH_GPU_SECONDS: one ZeroGPU slot holds a whole fit

    @classmethod
    def from_env(cls) -> StudioSettings:
        return cls(store_path=Path(os.environ.get("SYNTH_STORE") or data_dir("personas.sqlite")),
                   queue_max_size=int(os.environ.get("SYNTH_QUEUE_MAX_SIZE", cls.queue_max_size)),
                   fit_concurrency=int(os.environ.get("SYNTH_FIT_CONCURRENCY", cls.fit_concurrency)),
                   gpu_seconds=int(os.environ.get("SYNTH_GPU_SECONDS", cls.gpu_seconds)))


def persona_store(settings: StudioSettings) -> PersonaStore:
    """The population the insights tab reads and opted-in visitors join (SQLite, WAL)."""
    return PersonaStore(settings.store_path)


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


def build_app(lm_factory: Callable[[], dspy.BaseLM] | None = None,
              settings: StudioSettings | None = None) -> tuple[gr.Blocks, ModelHandle]:
    """The Blocks and its model handle; ``lm_factory`` defaults to ``build_lm()`` ($SYNTH_MODEL or offline),
    ``settings`` to ``StudioSettings.from_env()``."""
    settings = settings or StudioSettings.from_env()
    model = ModelHandle(lm_factory or build_lm)
    store = persona_store(settings)
    with gr.Blocks(title="SynthesizeMe Studio") as demo:
        gr.HTML('<div class="hero"><h1>SynthesizeMe Studio</h1><p>Label a handful of reply pairs and watch '
                'SynthesizeMe build a personalized LLM judge for you: reasoning verified against your choices, '
                'a persona, and the demos that predict you best (Ryan et al., ACL 2025).</p></div>')
        with gr.Tabs():
            with gr.Tab("Try it yourself", id="try"):
                session = build_try_tab(demo, model, gpu=gpu_task(duration=settings.gpu_seconds),
                                        contribute=population_contributor(store),
                                        fit_concurrency=settings.fit_concurrency)
            with gr.Tab("Population insights", id="insights"):
                build_insights_tab(store, persona_state=session)
    demo.queue(max_size=settings.queue_max_size, default_concurrency_limit=settings.default_concurrency)
    return demo, model


def launch(demo: gr.Blocks, **kwargs: Any):
    """Launch with the studio's look (CSS, fonts, keyboard shortcuts)."""
    return demo.launch(css_paths=[asset_path("style.css")], head=SHORTCUTS_JS, theme=gr.themes.Soft(
        primary_hue="indigo", neutral_hue="slate"), **kwargs)


def main(server_name: str | None = None, server_port: int | None = None, share: bool = False,
         lm_factory: Callable[[], dspy.BaseLM] | None = None) -> None:
    """Build the studio, start loading the model in the background, and serve until interrupted."""
    demo, model = build_app(lm_factory)
    model.start()
    launch(demo, server_name=server_name, server_port=server_port, share=share)
