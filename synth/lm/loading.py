"""Loading a local model: device and dtype choice, GGUF de-quantization (cached as safetensors), weights, tokenizer."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
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


def pick_dtype(device: str, requested: str = "auto"):
    """bf16 where the hardware multiplies it natively (CUDA; CPUs with AVX512-BF16 or AMX), else fp32.

    Native bf16 speeds up both prefill and the batched decoding step on such CPUs; on CPUs without it bf16 would
    be emulated and slower than fp32.
    """
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device == "cuda":
        return torch.bfloat16
    if device == "cpu" and (_cpu_supports("_is_avx512_bf16_supported") or _cpu_supports("_is_amx_tile_supported")):
        return torch.bfloat16
    return torch.float32


def _cpu_supports(probe: str) -> bool:
    import torch

    check = getattr(torch.cpu, probe, None)
    return bool(check and check())


class LocalModel:
    """Weights and tokenizer of one local model, loaded once (on first use) and shared by every engine on it.

    ``source`` is a Hugging Face id, a local directory or a ``.gguf`` file. GGUF weights are de-quantized by
    transformers on first load, which is slow on a small CPU; the result is cached as safetensors under
    ``synth.paths.cache_dir("models")`` so the next start takes seconds.
    """

    def __init__(self, source: str, *, device: str = "auto", dtype: str = "auto"):
        self.source = str(source)
        self.device_request = device
        self.dtype_request = dtype
        self._lock = threading.Lock()
        self._model = None
        self._tokenizer = None
        self.device = "unloaded"
        self.load_seconds: float | None = None

    @property
    def is_gguf(self) -> bool:
        return self.source.endswith(".gguf")

    @property
    def display_name(self) -> str:
        return Path(self.source).name if self.is_gguf else self.source

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

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
                log.info("loaded %s on %s in %.1fs", self.display_name, self.device, self.load_seconds)
        return self

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = pick_device(self.device_request)
        dtype = pick_dtype(device, self.dtype_request)
        directory = self.source
        if self.is_gguf:
            directory = self._gguf_cache_path()
            if not (directory / "config.json").exists():
                self._convert_gguf(directory)
        # A large tokenizer (Gemma's 262k tokens) takes seconds to load: it loads on a thread beside the weights.
        tokenizer_future: Future = Future()

        def load_tokenizer() -> None:
            try:
                tokenizer_future.set_result(AutoTokenizer.from_pretrained(directory))
            except BaseException as error:
                tokenizer_future.set_exception(error)

        threading.Thread(target=load_tokenizer, name="load-tokenizer", daemon=True).start()
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        tokenizer = tokenizer_future.result()
        model.to(device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.device, self._tokenizer, self._model = device, tokenizer, model

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
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
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
