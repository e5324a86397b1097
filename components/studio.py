"""SynthesizeMe Studio: assembles the tabs into one Gradio app (``synth app``, or ``app.py`` on a Space).

Settings come from the environment once, into a ``StudioSettings`` passed down; nothing here reads
``os.environ`` at import time, so tests and the CLI can build apps with different settings in one process.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import dspy
import gradio as gr

from components import device
from components.contribute import Contributor
from components.insights_tab import build_insights_tab
from components.labeling import load_bank
from components.limits import Limits, ModelGate
from components.model_handle import ModelHandle
from components.try_handlers import DeviceTasks, TryParts
from components.try_tab import SHORTCUTS_JS, build_try_tab
from components.visitors import Visitors
from synth.insights.population import SharedPopulation
from synth.lm import APP_QUANTIZE, build_lm, default_fit_concurrency
from synth.lm.gpu import gpu_task
from synth.paths import asset_path, data_dir
from synth.store import PersonaStore

GPU_SECONDS_PER_ACTION = 60  # ZeroGPU duration of a judge test, two drafts or two answers
GRADIO_CACHE = (1800, 3600)  # every 30 min, Gradio deletes its uploaded and served copies older than an hour


@dataclass(frozen=True)
class StudioSettings:
    """Deployment settings of the studio (each read from the environment variable named in the README)."""

    store_path: Path  # $SYNTH_STORE: the population's SQLite file
    queue_max_size: int = 32  # $SYNTH_QUEUE_MAX_SIZE: events waiting at most, all visitors together
    fit_concurrency: int | None = None  # $SYNTH_FIT_CONCURRENCY: model-bound events at once (None: by device)
    default_concurrency: int = 4  # light events (uploads, insights) running at once
    gpu_seconds: int = 240  # $SYNTH_GPU_SECONDS: one ZeroGPU slot holds a whole fit
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls) -> StudioSettings:
        concurrency = os.environ.get("SYNTH_FIT_CONCURRENCY", "").strip()
        return cls(store_path=Path(os.environ.get("SYNTH_STORE") or data_dir("personas.sqlite")),
                   queue_max_size=int(os.environ.get("SYNTH_QUEUE_MAX_SIZE", cls.queue_max_size)),
                   fit_concurrency=int(concurrency) if concurrency else None,
                   gpu_seconds=int(os.environ.get("SYNTH_GPU_SECONDS", cls.gpu_seconds)),
                   limits=Limits.from_env())


def without_response_cache(lm: dspy.BaseLM) -> dspy.BaseLM:
    """The studio's model with DSPy's response cache off: a public studio keeps no visitor's reasoning or persona
    on disk (or in memory past their visit) unless they consent."""
    return lm.copy(cache=False)


def device_tasks(model: ModelHandle, visitors: Visitors, gpu_seconds: int,
                 gpu: Callable[..., Callable] = gpu_task) -> DeviceTasks:
    """``components.device`` bound to the model and the cancel flags, each wrapped by ``gpu`` for ZeroGPU (a no-op
    elsewhere): a fit holds one slot of ``gpu_seconds``, the shorter actions one of ``GPU_SECONDS_PER_ACTION``."""
    return DeviceTasks(
        fit=gpu(partial(device.fit, model, visitors.cancel_flag), duration=gpu_seconds),
        draft=gpu(partial(device.draft, model, visitors.cancel_flag), duration=GPU_SECONDS_PER_ACTION),
        judge=gpu(partial(device.judge, model, visitors.cancel_flag), duration=GPU_SECONDS_PER_ACTION),
        answer=gpu(partial(device.answer, model, visitors.cancel_flag), duration=GPU_SECONDS_PER_ACTION))


def import_model_libraries() -> None:
    """Import what the background threads load models with, here in the calling thread, before any of them starts.

    transformers resolves its model classes lazily; the model load and the population fit (sentence-transformers)
    resolving them in two threads at once can deadlock Python's import locks, which then hands one thread a
    half-initialised module ("cannot import name 'AutoModelForCausalLM'") and the model never loads.
    """
    import sentence_transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401


def build_app(lm_factory: Callable[[], dspy.BaseLM] | None = None,
              settings: StudioSettings | None = None,
              population: SharedPopulation | None = None) -> tuple[gr.Blocks, ModelHandle]:
    """The Blocks and its model handle; ``lm_factory`` defaults to ``build_lm`` ($SYNTH_MODEL or offline; int8 linear
    layers on a CPU without native bf16, see ``APP_QUANTIZE``), ``settings`` to ``StudioSettings.from_env()``,
    ``population`` to the store's with the bundled sample."""
    settings = settings or StudioSettings.from_env()
    import_model_libraries()
    gate = ModelGate(capacity=settings.fit_concurrency or 1, per_client=settings.limits.per_client,
                     max_line=settings.queue_max_size)

    def size_gate(lm: dspy.BaseLM) -> None:  # the device is known once the model has loaded
        gate.set_capacity(settings.fit_concurrency or default_fit_concurrency(lm))

    factory = lm_factory or partial(build_lm, quantize=APP_QUANTIZE)
    model = ModelHandle(lambda: without_response_cache(factory()), on_ready=(size_gate,))
    visitors = Visitors()
    atexit.register(visitors.close)
    population = population or SharedPopulation(PersonaStore(settings.store_path))
    bank = load_bank()
    parts = TryParts(model=model, gate=gate, visitors=visitors, limits=settings.limits, bank=bank,
                     device=device_tasks(model, visitors, settings.gpu_seconds),
                     contributor=Contributor(population.store, bank))
    with gr.Blocks(title="SynthesizeMe Studio", delete_cache=GRADIO_CACHE) as demo:
        gr.HTML('<div class="hero"><h1>SynthesizeMe Studio</h1><p>Label a handful of reply pairs and watch '
                'SynthesizeMe build a personalized LLM judge for you: reasoning verified against your choices, '
                'a persona, and the demos that predict you best (Ryan et al., ACL 2025).</p></div>')
        with gr.Tabs():
            with gr.Tab("Try it yourself", id="try"):
                session = build_try_tab(demo, parts)
            with gr.Tab("Population insights", id="insights") as insights:
                view = build_insights_tab(population, limits=settings.limits, persona_state=session)
        view.show_on(insights.select)  # opening the tab shows the population as it is now
    demo.queue(max_size=settings.queue_max_size, default_concurrency_limit=settings.default_concurrency)
    demo.max_file_size = settings.limits.max_upload_bytes  # Gradio's own name; ``launch`` passes it on
    return demo, model


def launch(demo: gr.Blocks, **kwargs: Any):
    """Launch with the studio's look (CSS, fonts, keyboard shortcuts) and its upload limit."""
    kwargs.setdefault("max_file_size", getattr(demo, "max_file_size", None))
    return demo.launch(css_paths=[asset_path("style.css")], head=SHORTCUTS_JS, theme=gr.themes.Soft(
        primary_hue="indigo", neutral_hue="slate"), **kwargs)


def main(server_name: str | None = None, server_port: int | None = None, share: bool = False,
         lm_factory: Callable[[], dspy.BaseLM] | None = None) -> None:
    """Build the studio, start loading the model in the background, and serve until interrupted."""
    demo, model = build_app(lm_factory)
    model.start()
    launch(demo, server_name=server_name, server_port=server_port, share=share)
