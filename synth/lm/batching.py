"""A local engine that turns DSPy's many concurrent calls into few batched forward passes.

DSPy runs a fit's judge calls on worker threads (``synth.parallel.run_concurrently``, which submits each job
exactly once: DSPy's own ParallelExecutor re-submits calls slower than 120 s, which on a busy local model
would run the same work twice). Each thread's call becomes a job on a bounded queue; one worker thread takes
every job waiting (after a short gathering window), runs the generations as one left-padded batch and the
verdict scorings as one padded forward, and hands each caller its own answer through a future.

Micro-batching was chosen over transformers' continuous batching (``generate_batch``) by measurement on the
shared 2-core CPU (packaged Gemma 270M, 4 real judge prompts of ~800 tokens, 4 new tokens each, greedy):
micro-batching 53 s, ``generate_batch`` 86 s (``benchmarks/throughput.py --raw``). Micro-batching also keeps
per-request temperature and seeded sampling, stop strings and the verdict scoring in one code path.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from synth.lm.local import EngineClosed, Generation, GenerationParams, LocalEngine, LocalModel

log = logging.getLogger(__name__)

_SHUTDOWN = object()


@dataclass(eq=False)
class _Job:
    """One caller's request: a generation (``params`` set) or a verdict scoring (``choices`` set)."""

    prompt: str
    params: GenerationParams | None = None
    choices: tuple[str, ...] | None = None
    future: Future = field(default_factory=Future)

    @property
    def group(self) -> tuple:
        """Jobs of one group run in one batched call on the model."""
        return ("generate",) if self.params is not None else ("score", self.choices)

    @property
    def identity(self) -> tuple:
        """Identical requests in one batch are computed once (DSPy's cache only catches sequential repeats)."""
        return (self.prompt, self.params, self.choices)


class BatchingEngine(LocalEngine):
    """Same interface as :class:`LocalEngine`; concurrent calls are queued and run together by one worker.

    ``max_pending`` bounds the queue (callers block when it is full); ``gather_seconds`` is how long the worker
    waits for more jobs after the first one arrives, so threads that submit together share a batch.
    ``close()`` stops the worker: the running batch is interrupted between decoding steps, and every pending
    or running caller gets :class:`EngineClosed`.
    """

    def __init__(self, model: LocalModel, *, max_pending: int = 256, max_batch: int = 64,
                 gather_seconds: float = 0.02):
        super().__init__(model)
        self.max_batch = max_batch
        self.gather_seconds = gather_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._closed = threading.Event()
        self._running: list[_Job] = []
        self._running_lock = threading.Lock()
        self.batches_run = 0
        self._worker = threading.Thread(target=self._work, name="synth-batching", daemon=True)
        self._worker.start()

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    # ---- the LocalEngine interface ------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str], params: Sequence[GenerationParams]) -> list[Generation]:
        if len(prompts) != len(params):
            raise ValueError(f"{len(prompts)} prompts but {len(params)} generation params")
        jobs = [self._submit(_Job(prompt, params=q)) for prompt, q in zip(prompts, params)]
        return [job.future.result() for job in jobs]

    def choice_probabilities(self, prompts: Sequence[str], choices: Sequence[str]) -> list[list[float]]:
        jobs = [self._submit(_Job(prompt, choices=tuple(choices))) for prompt in prompts]
        return [job.future.result() for job in jobs]

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker and fail every unanswered request with EngineClosed; safe to call twice."""
        self._closed.set()
        try:
            self._queue.put_nowait(_SHUTDOWN)
        except queue.Full:  # the worker checks the closed flag between batches anyway
            pass
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)
        self._fail_pending()

    # ---- worker -------------------------------------------------------------------------------------------
    def _submit(self, job: _Job) -> _Job:
        while True:
            if self._closed.is_set():
                raise EngineClosed("the batching engine is closed")
            try:
                self._queue.put(job, timeout=0.1)
            except queue.Full:
                continue
            if self._closed.is_set():  # closed while we were enqueuing: make sure nobody is left waiting
                self._fail_pending()
            return job

    def _work(self) -> None:
        while not self._closed.is_set():
            first = self._queue.get()
            if first is _SHUTDOWN:
                break
            batch = [first] + self._gather()
            with self._running_lock:
                self._running = batch
            try:
                self._execute(batch)
            except BaseException as error:  # never die silently: answer everyone, refuse new work, stop
                log.exception("batching worker failed")
                self._closed.set()
                for job in batch:
                    _resolve(job, error=error)
                break
            finally:
                with self._running_lock:
                    self._running = []
        self._fail_pending()

    def _gather(self) -> list[_Job]:
        """Jobs that arrive within the gathering window (and everything already waiting), up to max_batch."""
        jobs: list[_Job] = []
        while len(jobs) < self.max_batch - 1:
            try:
                job = self._queue.get(timeout=self.gather_seconds)
            except queue.Empty:
                break
            if job is _SHUTDOWN:
                self._closed.set()
                break
            jobs.append(job)
        return jobs

    def _execute(self, batch: list[_Job]) -> None:
        self.batches_run += 1
        groups: dict[tuple, list[_Job]] = {}
        for job in batch:
            if job.future.set_running_or_notify_cancel():
                groups.setdefault(job.group, []).append(job)
        for group, jobs in groups.items():
            unique: dict[tuple, list[_Job]] = {}
            for job in jobs:
                unique.setdefault(job.identity, []).append(job)
            representatives = [same[0] for same in unique.values()]
            try:
                answers = self._run_group(group, representatives)
            except EngineClosed as error:
                for job in jobs:
                    _resolve(job, error=error)
                continue
            except Exception:  # one bad request must not fail its batch-mates: retry one by one
                answers = [self._run_alone(group, job) for job in representatives]
            for same, answer in zip(unique.values(), answers, strict=True):
                for job in same:
                    _resolve(job, **answer)

    def _run_group(self, group: tuple, jobs: list[_Job]) -> list[dict]:
        prompts = [job.prompt for job in jobs]
        if group[0] == "generate":
            results = self.local_model.generate(prompts, [job.params for job in jobs], cancel=self._closed)
        else:
            results = self.local_model.choice_probabilities(prompts, group[1])
        return [{"result": result} for result in results]

    def _run_alone(self, group: tuple, job: _Job) -> dict:
        try:
            return self._run_group(group, [job])[0]
        except Exception as error:
            return {"error": error}

    def _fail_pending(self) -> None:
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not _SHUTDOWN:
                _resolve(job, error=EngineClosed("the batching engine was closed before this request ran"))
        if not self._worker.is_alive():
            with self._running_lock:
                for job in self._running:
                    _resolve(job, error=EngineClosed("the batching engine was closed while this request ran"))


def _resolve(job: _Job, result=None, error: BaseException | None = None) -> None:
    """Answer a job exactly once; a second answer (e.g. from shutdown racing the worker) is ignored."""
    if job.future.done():
        return
    try:
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)
    except Exception:  # InvalidStateError: answered concurrently a moment ago
        pass


__all__ = ["BatchingEngine", "EngineClosed"]
