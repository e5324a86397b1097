"""Loading a local model: device and dtype choice, GGUF de-quantization (cached as safetensors), weights, tokenizer."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from synth.paths import cache_dir

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> str:
    """CUDA > MPS > CPU unless the caller names one."""
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, requested: str = "auto", native_bf16: bool | None = None):
    """bf16 where the hardware multiplies it natively (CUDA GPUs that support it; CPUs with AVX512-BF16 or AMX, see
    :func:`cpu_has_native_bf16`, which ``native_bf16`` overrides); fp16 on older GPUs (a T4 has fp16 tensor cores
    and no bf16); else fp32.

    Native bf16 speeds up both prefill and the batched decoding step on such CPUs; on CPUs without it bf16 would
    be emulated and slower than fp32.
    """
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and (cpu_has_native_bf16() if native_bf16 is None else native_bf16):
        return torch.bfloat16
    return torch.float32


# oneDNN's instruction sets (``ONEDNN_MAX_CPU_ISA`` values) from which it multiplies bf16 in hardware.
ONEDNN_BF16_ISAS = frozenset({"AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX",
                              "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "ALL", "DEFAULT"})


def onednn_allows_bf16(max_cpu_isa: str | None) -> bool:
    """Whether oneDNN, which runs torch's bf16 matrix products on a CPU, may use native bf16 under this
    ``ONEDNN_MAX_CPU_ISA`` (unset: whatever the CPU has)."""
    return not max_cpu_isa or max_cpu_isa.strip().upper() in ONEDNN_BF16_ISAS


def cpu_has_native_bf16() -> bool:
    """The CPU multiplies bf16 natively (AVX512-BF16 or AMX) and oneDNN may use it: ``ONEDNN_MAX_CPU_ISA`` (or
    ``DNNL_MAX_CPU_ISA``) below AVX512_CORE_BF16 makes torch's bf16 matrix products fall back to slow generic code,
    so that CPU is treated as one without bf16 (how an AVX2-only CPU is emulated, see docs/performance.md)."""
    hardware = _cpu_supports("_is_avx512_bf16_supported") or _cpu_supports("_is_amx_tile_supported")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return hardware and onednn_allows_bf16(isa)


# What limits the instruction sets torch's CPU kernels use (ATen's own, MKL's fp32, oneDNN's bf16, fbgemm's int8):
# set to AVX2 together, a newer CPU runs the code paths of one with AVX2 only (docs/performance.md).
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS")


def isa_limits() -> str:
    """The instruction-set limits set in this process's environment, for benchmark headers ("" when none)."""
    return ", ".join(f"{name}={os.environ[name]}" for name in ISA_LIMITS if os.environ.get(name))


QUANTIZATIONS = ("auto", "none", "int8")
QUANTIZE_HELP = ("int8: the linear layers in int8 (CPU only); auto: int8 on a CPU without native bf16 when the "
                 "dtype is left to the hardware, else none; none: as loaded (see synth.lm.loading.pick_quantization)")


def pick_quantization(device: str, dtype_request: str = "auto", requested: str = "auto",
                      native_bf16: bool | None = None) -> str:
    """``none`` or ``int8`` (see :func:`quantize_int8`) for a model loaded on ``device``.

    ``requested`` is one of `QUANTIZATIONS` (``LocalModel`` checks it when constructed). ``auto`` is int8 where the
    precision is left to the hardware (``dtype_request`` auto) and that hardware is a CPU without native bf16, which
    would otherwise run fp32; none everywhere else: a bf16 CPU, a GPU, or a dtype asked for by name (float32 means
    exact fp32). ``native_bf16`` overrides :func:`cpu_has_native_bf16`. ``LocalModel``'s default is none, not auto:
    int8 scales each matrix product's input as a whole, so a row's numbers depend on the rows batched with it and
    a seeded fit is no longer the same from run to run; the app, where speed matters more, asks for auto.
    """
    if requested == "int8" and device != "cpu":
        raise ValueError(f"int8 quantization runs on the CPU only, not on {device}")
    if requested != "auto":
        return requested
    if device != "cpu" or dtype_request != "auto":
        return "none"
    return "none" if (cpu_has_native_bf16() if native_bf16 is None else native_bf16) else "int8"


def quantize_int8(model):
    """The linear layers with int8 weights, one scale per output channel, and their input quantized to int8 on the
    fly (PyTorch's dynamic quantization, fbgemm kernels for AVX2 and AVX-512); the MLPs' output projections
    (``down_proj``) stay in fp32.

    Meant for a CPU without native bf16 (prefill and decoding multiply int8 instead of fp32, and a decoding step
    reads a quarter of the weight bytes, most of them the output layer's), when asked for (:func:`pick_quantization`).
    A ``down_proj`` reads the gated activations, whose few very large values leave the one int8 scale of its
    whole input too coarse for the rest: quantized, the next-token logits drift much further from fp32's.
    ``torch.ao.quantization`` announces its move to torchao; torch is pinned (scripts/setup.sh), and the notice is
    silenced here.
    """
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        quantized = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) and not name.endswith("down_proj")}
        return quantize_dynamic(model, quantized, dtype=torch.qint8, inplace=True)


def _cpu_supports(probe: str) -> bool:
    import torch

    check = getattr(torch.cpu, probe, None)
    return bool(check and check())


class LocalModel:
    """Weights and tokenizer of one local model, loaded once (on first use) and shared by every engine on it.

    ``source`` is a Hugging Face id, a local directory or a ``.gguf`` file. GGUF weights are de-quantized by
    transformers on first load, which is slow on a small CPU; the result is cached as safetensors under
    ``synth.paths.cache_dir("models")`` so the next start takes seconds (``synth prepare`` does it ahead of time).
    A local directory or file is read without asking the Hugging Face Hub anything, whatever ``HF_HUB_OFFLINE`` says.
    """

    def __init__(self, source: str, *, device: str = "auto", dtype: str = "auto", quantize: str = "none"):
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
        self.source = str(source)
        self.device_request = device
        self.dtype_request = dtype
        self.quantize_request = quantize
        self.quantization = "unloaded"  # once loaded, "none" or "int8" (see pick_quantization)
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None
        self.device = "unloaded"
        self.load_seconds: float | None = None

    @property
    def is_gguf(self) -> bool:
        return self.source.endswith(".gguf")

    @property
    def is_local_path(self) -> bool:
        return self.is_gguf or Path(self.source).is_dir()

    @property
    def display_name(self) -> str:
        return Path(self.source).name if self.is_gguf else self.source

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    @property
    def precision(self) -> str:
        """How the loaded weights multiply, for status lines: ``bfloat16``, ``float32``, ``float32, int8 linear
        layers``."""
        if self._model is None:
            return "unloaded"
        dtype = str(self._model.dtype).removeprefix("torch.")
        return f"{dtype}, int8 linear layers" if self.quantization == "int8" else dtype

    @property
    def model(self):
        """The transformers model (loads on first use)."""
        return self.load()._model

    @property
    def tokenizer(self):
        """The tokenizer, left-padding, with a pad token (loads on first use)."""
        return self.load()._tokenizer

    def load(self) -> LocalModel:
        """Load once (thread-safe); later calls return at once."""
        with self._lock:
            if self._model is None:
                started = time.perf_counter()
                self._load()
                self.load_seconds = time.perf_counter() - started
                log.info("loaded %s on %s in %s in %.1fs", self.display_name, self.device, self.precision,
                         self.load_seconds)
        return self

    def weights_directory(self, progress: Callable[[str], None] | None = None) -> str:
        """Where the weights load from: the source itself, or for a GGUF file its converted copy, made first if it
        is not cached yet (``progress`` hears what happens)."""
        if not self.is_gguf:
            return self.source
        directory = self._gguf_cache_path()
        if not (directory / "config.json").exists():
            say = progress or log.info
            say(f"converting {self.display_name} to safetensors (once per file; later starts load the copy) ...")
            started = time.perf_counter()
            self._convert_gguf(directory)
            say(f"converted in {time.perf_counter() - started:.0f} s: {directory}")
        return str(directory)

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = pick_device(self.device_request)
        dtype = pick_dtype(device, self.dtype_request)
        directory = self.weights_directory()
        local = {"local_files_only": True} if self.is_local_path else {}
        # A large tokenizer (Gemma's 262k tokens) takes seconds to load: it loads on a thread beside the weights.
        tokenizer_future: Future = Future()

        def load_tokenizer() -> None:
            try:
                tokenizer_future.set_result(AutoTokenizer.from_pretrained(directory, **local))
            except BaseException as error:
                tokenizer_future.set_exception(error)

        threading.Thread(target=load_tokenizer, name="load-tokenizer", daemon=True).start()
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **local)
        tokenizer = tokenizer_future.result()
        model.to(device).eval()
        quantization = pick_quantization(device, self.dtype_request, self.quantize_request)
        if quantization == "int8":
            model = quantize_int8(model)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.device, self.quantization, self._tokenizer, self._model = device, quantization, tokenizer, model

    def _gguf_cache_path(self) -> Path:
        """The converted copy's folder, named after the file and keyed by its path, size and modification time."""
        path = Path(self.source)
        stat = path.stat()
        key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        return cache_dir("models") / f"{path.stem}-{key[:12]}"

    def _convert_gguf(self, target: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self.source)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                     local_files_only=True)
        # The weights are already de-quantized; drop the GGUF marker so they can be saved as plain safetensors.
        model.hf_quantizer = None
        model.config.__dict__.pop("quantization_config", None)
        staging = target.with_name(target.name + f".partial-{os.getpid()}")
        tokenizer.save_pretrained(staging)
        model.save_pretrained(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first; theirs is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
