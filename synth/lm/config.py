"""Every limit and policy knob of the local engine in one frozen object, passed to the engine that uses it.

Tests and benchmarks build the config they need (``EngineConfig(cpu_batch_rows=3)``) instead of changing module
state; :meth:`EngineConfig.batch_rows` and :meth:`EngineConfig.prefill_rows` give the value for the device the
model was loaded on. The defaults were chosen with ``benchmarks/throughput.py``, ``benchmarks/fit_time.py`` and
``benchmarks/decode_step.py`` (see docs/performance.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    """How a local engine schedules and batches its work.

    ``batching`` off runs one request at a time in arrival order through the same scheduler (``SYNTH_BATCHING=0``:
    the baseline the throughput benchmark compares batching with). On CUDA free memory bounds a batch below
    ``gpu_batch_rows``; elsewhere a fixed number of rows, because larger batches stop paying off on a CPU. MPS uses
    the CPU's batch rows and the GPU's prefill rows.
    """

    batching: bool = True
    cpu_batch_rows: int = 16  # rows decoding together on CPU and MPS
    gpu_batch_rows: int = 128  # the most rows decoding together on CUDA
    cpu_prefill_rows: int = 4  # rows per prefill pass on CPU: small groups are faster there
    gpu_prefill_rows: int = 128  # rows per prefill pass elsewhere: one pass takes the whole batch
    gpu_memory_fraction: float = 0.8  # of free CUDA memory, what one batch's cache and logits may take
    min_shared_prefix: int = 32  # tokens; a shorter common prefix is not worth a separate forward pass
    prefix_store_bytes: int = 1 << 30  # remembered prompt states (RAM, or the least on CUDA)
    gpu_prefix_store_fraction: float = 0.2  # of the CUDA memory the weights left free, for remembered states
    max_input_tokens: int = 8192  # the longest prompt a request may send
    max_context_tokens: int = 8192  # prompt + new tokens of one request; the model's own context when smaller
    gather_seconds: float = 0.02  # an idle engine waits this long after a request for others to batch with it
    max_pending: int = 256  # queued submissions; callers block beyond it
    cpu_fit_concurrency: int = 2  # visitors' fits sharing the engine at once on CPU and MPS
    gpu_fit_concurrency: int = 8  # the most fits sharing it on CUDA (fewer when memory holds fewer rows)
    rows_per_fit: int = 24  # rows one fit's stage keeps decoding: how a GPU's batch rows are shared out
    fit_row_tokens: int = 2048  # prompt + reasoning of a typical judge row, for sizing the GPU's batch

    def __post_init__(self) -> None:
        for name in ("cpu_batch_rows", "gpu_batch_rows", "cpu_prefill_rows", "gpu_prefill_rows", "max_input_tokens",
                     "max_context_tokens", "max_pending", "cpu_fit_concurrency", "gpu_fit_concurrency", "rows_per_fit",
                     "fit_row_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"EngineConfig.{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_env(cls) -> EngineConfig:
        """The defaults, with batching off when ``SYNTH_BATCHING=0``."""
        return cls(batching=os.environ.get("SYNTH_BATCHING", "1").strip() != "0")

    def batch_rows(self, device: str) -> int:
        """The most rows one decoding batch holds on ``device`` (on CUDA, free memory may allow fewer)."""
        return self.gpu_batch_rows if device == "cuda" else self.cpu_batch_rows

    def prefill_rows(self, device: str) -> int:
        """Rows per prefill pass on ``device``."""
        return self.cpu_prefill_rows if device == "cpu" else self.gpu_prefill_rows
