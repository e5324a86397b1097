"""The one loop that runs every request of a local engine.

DSPy runs a fit's judge calls on worker threads (``synth.parallel.run_concurrently``, which submits each job
exactly once: DSPy's own ParallelExecutor re-submits calls slower than 120 s, which on a busy local model
would run the same work twice). Each caller's requests go onto a bounded queue; one worker thread runs them with
continuous batching: generation requests join the decoding batch as soon as it has room (their prompts prefilled
together, what they share computed once), leave it the moment they finish, and verdict scorings run as padded
batches between decoding steps. A request identical to one in flight is answered by it. Each caller gets its own
answer through a future; one that fails fails its own caller only.

With ``EngineConfig.batching`` off the same loop takes one request at a time, in arrival order, and runs it to
the end before the next: the engine's behaviour without batching, on the same code path.

Several fits (visitors) share the loop. Every request carries its owner (:mod:`synth.lm.owners`): when the batch
has less room than rows are waiting, the owner with fewest rows decoding goes first, so no fit is starved by
another's larger stage. A request whose owner is cancelled, or whose own cancel flag is set (a stream closed by its
reader), is dropped between decoding steps, queued or running; identical requests of other owners that shared its
row keep it. A streamed request (``on_token``) hears each of its tokens as it is decoded.

This design keeps per-request temperature with seeded sampling, stop strings and the verdict scoring in one code
path; transformers' own continuous batching (``generate_batch``) and plain micro-batching (every row waiting for
the batch's longest) were measured slower (``benchmarks/throughput.py --raw``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from synth.lm.config import EngineConfig
from synth.lm.loading import LocalModel
from synth.lm.owners import RequestOwner, current_owner
from synth.lm.runner import DecodeBatch, DecodeRow, ModelRunner
from synth.lm.sampling import GenerationParams
from synth.parallel import FitCancelled

log = logging.getLogger(__name__)

_SHUTDOWN = object()

# Every scheduler whose worker may still run. A worker left inside the model when the interpreter tears down aborts
# the process ("terminate called without an active exception", exit code 134), so they are all closed at exit.
_live: weakref.WeakSet[Scheduler] = weakref.WeakSet()


class EngineClosed(RuntimeError):
    """Raised to callers whose request was pending or running when the engine was closed."""


class RequestCancelled(FitCancelled):
    """Raised to a caller whose request was dropped because its owner, or the request itself, was cancelled."""


@dataclass(eq=False)
class Job:
    """One caller's request: a generation (``params`` set) or a choice scoring (``choices`` set) of an encoded
    prompt, made for ``owner`` (by default the owner of the scope that builds the job)."""

    prompt: str
    ids: list[int]
    params: GenerationParams | None = None
    choices: tuple[str, ...] | None = None
    owner: RequestOwner | None = field(default_factory=current_owner)
    cancels: tuple[threading.Event, ...] = ()  # this request's own flags (a stream's reader closing it)
    on_token: Callable[[int], None] | None = None  # a streamed generation: called on the worker with each token
    future: Future = field(default_factory=Future)

    @property
    def identity(self) -> tuple:
        """Identical requests are computed once (DSPy's cache only catches sequential repeats); a stream has a row
        of its own, so its reader hears every token from the first."""
        if self.on_token is not None:
            return ("stream", id(self))
        return (self.prompt, self.params, self.choices)

    @property
    def cancelled(self) -> bool:
        return any(flag.is_set() for flag in self.cancels) or (self.owner is not None and self.owner.cancelled)


@dataclass
class SchedulerStats:
    """What the loop has done so far (benchmarks read it)."""

    prefills_run: int = 0  # admissions and scorings: each runs one or more prefill passes
    decode_steps: int = 0
    prefill_seconds: float = 0.0  # wall time in admissions and scorings; with decode_seconds, the model's busy time
    decode_seconds: float = 0.0
    peak_rows: int = 0  # most rows decoding together
    cancelled: int = 0  # requests dropped because they or their owner were cancelled


class Scheduler:
    """Runs submitted jobs on one worker thread (see the module docstring).

    ``config.max_pending`` bounds the queue (callers block when it is full); ``config.gather_seconds`` is how long
    an idle worker waits for more jobs after the first arrives, so threads that submit together share a prefill.
    :meth:`close` stops the worker: decoding is interrupted between steps, and every pending or running caller
    gets :class:`EngineClosed`.
    """

    def __init__(self, model: LocalModel, config: EngineConfig):
        self.model = model
        self.config = config
        self.stats = SchedulerStats()
        self._queue: queue.Queue = queue.Queue(maxsize=config.max_pending)
        self._closed = threading.Event()
        self._followers: dict[tuple, list[Job]] = {}  # a generation's identity -> every job it answers
        self._followers_lock = threading.Lock()
        self._streams: dict[tuple, Job] = {}  # a streamed generation's identity -> its job (worker thread only)
        self._runner: ModelRunner | None = None
        self._runner_lock = threading.Lock()
        self._worker = threading.Thread(target=self._work, name="synth-scheduler", daemon=True)
        self._worker.start()
        _live.add(self)

    @property
    def runner(self) -> ModelRunner:
        """The model runner, made on first use (which loads the model)."""
        return self._runner or self._make_runner()

    def _make_runner(self) -> ModelRunner:
        with self._runner_lock:
            if self._runner is None:
                self._runner = ModelRunner(self.model, self.config)
            return self._runner

    @property
    def is_closed(self) -> bool:
        return self._closed.is_set()

    def run(self, jobs: list[Job]) -> list:
        """Submit ``jobs`` together and wait for their answers, in order (a failed job raises its error)."""
        self.submit(jobs)
        return [job.future.result() for job in jobs]

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` together (blocking while the queue is full); each answers through its future."""
        if self._closed.is_set():
            raise EngineClosed("the engine is closed")
        self._make_runner()  # on the caller's thread: a model that cannot load or run fails its caller only
        while True:
            if self._closed.is_set():
                raise EngineClosed("the engine is closed")
            try:
                self._queue.put(jobs, timeout=0.1)
            except queue.Full:
                continue
            if self._closed.is_set():  # closed while we were enqueuing: make sure nobody is left waiting
                self._fail_pending()
            break

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker, fail every unanswered request with EngineClosed and drop the stored prefixes; safe to
        call twice."""
        self._closed.set()
        with contextlib.suppress(queue.Full):  # the worker checks the closed flag between steps anyway
            self._queue.put_nowait(_SHUTDOWN)
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)
        self._fail_pending()
        if self._runner is not None:
            self._runner.prefix_store.clear()

    # ---- the loop -------------------------------------------------------------------------------------------
    def _work(self) -> None:
        batch: DecodeBatch | None = None
        waiting: list[DecodeRow] = []
        arrived: list[Job] = []  # taken from the queue, not started yet (one at a time without batching)
        try:
            while not self._closed.is_set():
                busy = bool(batch) or bool(waiting)
                if not arrived and (self.config.batching or not busy):
                    arrived = self._take(block=not busy)
                arrived = self._unless_cancelled(arrived)
                starting, arrived = self._starting(arrived, busy)
                waiting += self._new_rows([job for job in starting if job.params is not None])
                self._score([job for job in starting if job.choices is not None])
                waiting = self._drop_cancelled(batch, waiting)
                if waiting:
                    if batch is None:  # one batch for the worker's life: it keeps its stop checkers
                        batch = DecodeBatch(self.runner)
                    waiting = self._admit(batch, waiting)
                if batch:
                    if self._closed.is_set():
                        raise EngineClosed("the engine was closed while this request ran")
                    finished = self._step(batch)
                    if self._streams:
                        self._stream(finished + batch.rows)
                    self._finish(finished)
        except EngineClosed:
            pass
        except BaseException as error:  # never die silently: answer everyone, refuse new work, stop
            log.exception("engine worker failed")
            self._fail_followers(error)
        self._closed.set()
        closed = EngineClosed("the engine was closed before this request ran")
        for job in arrived:
            _resolve(job, error=closed)
        self._fail_followers(EngineClosed("the engine was closed while this request ran"))
        self._fail_pending()

    def _take(self, block: bool) -> list[Job]:
        """Every job waiting now; when idle, block for the first one and gather those arriving just after it."""
        jobs: list[Job] = []
        timeout = None if block else 0.0
        while True:
            try:
                item = self._queue.get(timeout=timeout) if timeout != 0.0 else self._queue.get_nowait()
            except queue.Empty:
                return jobs
            if item is _SHUTDOWN:
                closed = EngineClosed("the engine was closed before this request ran")
                for taken in jobs:
                    _resolve(taken, error=closed)
                raise closed
            jobs += [job for job in item if job.future.set_running_or_notify_cancel()]
            if block:
                timeout = self.config.gather_seconds if self.config.batching else 0.0

    def _starting(self, arrived: list[Job], busy: bool) -> tuple[list[Job], list[Job]]:
        """Split the arrived jobs into those that start now and those that wait: with batching all start, without
        it the first starts once nothing else runs."""
        if self.config.batching:
            return arrived, []
        if busy or not arrived:
            return [], arrived
        return arrived[:1], arrived[1:]

    def _new_rows(self, jobs: list[Job]) -> list[DecodeRow]:
        """Rows for new generation requests, each allowed what fits in the model's context; a request identical to
        one already in flight just follows it."""
        rows = []
        for job in jobs:
            with self._followers_lock:
                following = self._followers.get(job.identity)
                if following is not None:
                    following.append(job)
                    continue
                self._followers[job.identity] = [job]
            if job.on_token is not None:
                self._streams[job.identity] = job
            allowed = self.runner.new_tokens_allowed(len(job.ids), job.params.max_new_tokens)
            rows.append(DecodeRow(job.prompt, job.ids, job.params, tag=job.identity, max_new_tokens=allowed))
        return rows

    # ---- cancellation and streaming -------------------------------------------------------------------------
    def _unless_cancelled(self, jobs: list[Job]) -> list[Job]:
        """The jobs still wanted; the others are answered with RequestCancelled."""
        kept = []
        for job in jobs:
            if job.cancelled:
                self._cancel(job)
            else:
                kept.append(job)
        return kept

    def _cancel(self, job: Job) -> None:
        self.stats.cancelled += 1
        _resolve(job, error=RequestCancelled("the request was cancelled"))

    def _drop_cancelled(self, batch: DecodeBatch | None, waiting: list[DecodeRow]) -> list[DecodeRow]:
        """Answer cancelled followers; a row none of whose followers is left goes, waiting or decoding. Returns the
        rows still waiting."""
        gone = set()
        with self._followers_lock:
            for identity, jobs in list(self._followers.items()):
                if not any(job.cancelled for job in jobs):
                    continue
                live = [job for job in jobs if not job.cancelled]
                for job in jobs:
                    if job.cancelled:
                        self._cancel(job)
                if live:
                    self._followers[identity] = live
                else:
                    del self._followers[identity]
                    gone.add(identity)
        if not gone:
            return waiting
        for identity in gone:
            self._streams.pop(identity, None)
        if batch:
            batch.drop([row for row in batch.rows if row.tag in gone])
        return [row for row in waiting if row.tag not in gone]

    def _stream(self, rows: list[DecodeRow]) -> None:
        """Tell each streamed row's reader the token it just got."""
        for row in rows:
            job = self._streams.get(row.tag)
            if job is not None:
                job.on_token(row.new_tokens[-1])

    def _score(self, jobs: list[Job]) -> None:
        by_choices: dict[tuple[str, ...], dict[tuple, list[Job]]] = {}
        for job in jobs:
            by_choices.setdefault(job.choices, {}).setdefault(job.identity, []).append(job)
        for choices, same in by_choices.items():
            prompts = [group[0].ids for group in same.values()]
            self.stats.prefills_run += 1
            started = time.perf_counter()
            try:
                answers = [{"result": r} for r in self.runner.choice_probabilities(prompts, choices)]
            except Exception:  # one bad request must not fail its batch-mates: retry one by one
                answers = [self._score_alone(ids, choices) for ids in prompts]
            self.stats.prefill_seconds += time.perf_counter() - started
            for group, answer in zip(same.values(), answers, strict=True):
                for job in group:
                    _resolve(job, **answer)

    def _score_alone(self, ids: list[int], choices: tuple[str, ...]) -> dict:
        try:
            return {"result": self.runner.choice_probabilities([ids], choices)[0]}
        except Exception as error:
            return {"error": error}

    def _admit(self, batch: DecodeBatch, waiting: list[DecodeRow]) -> list[DecodeRow]:
        """Move waiting rows into the decoding batch while it has room, fairly between owners (see
        :meth:`_fair_order`); returns the rows still waiting."""
        waiting = self._fair_order(batch, waiting)
        room = self._room(batch, waiting)
        if not room:
            return waiting
        joining, waiting = waiting[:room], waiting[room:]
        self.stats.prefills_run += 1
        started = time.perf_counter()
        try:
            self._finish(batch.admit(joining))
        except Exception:  # find the row that fails; the others join one by one
            for row in joining:
                try:
                    self._finish(batch.admit([row]))
                except Exception as error:
                    self._answer(row.tag, error=error)
        self.stats.prefill_seconds += time.perf_counter() - started
        self.stats.peak_rows = max(self.stats.peak_rows, len(batch))
        return waiting

    def _fair_order(self, batch: DecodeBatch, waiting: list[DecodeRow]) -> list[DecodeRow]:
        """The waiting rows in the order they may join: shortest prompts first (similar lengths join together, little
        padding), and between owners the one with fewest rows decoding first, the older owner on a tie, so each
        owner gets a share of the room however many rows another has waiting."""
        by_length = sorted(waiting, key=lambda row: len(row.ids))
        with self._followers_lock:
            owner_of = {row.tag: self._owner(row.tag) for row in by_length + batch.rows}
        queues: dict[RequestOwner | None, deque[DecodeRow]] = {}
        for row in by_length:
            queues.setdefault(owner_of[row.tag], deque()).append(row)
        if len(queues) < 2:
            return by_length
        decoding = Counter(owner_of[row.tag] for row in batch.rows)
        order = []
        while queues:
            owner = min(queues, key=lambda o: (decoding[o], o.number if o is not None else 0))
            order.append(queues[owner].popleft())
            decoding[owner] += 1
            if not queues[owner]:
                del queues[owner]
        return order

    def _owner(self, identity: tuple) -> RequestOwner | None:
        """The owner a row counts for: its first follower's (call with the followers lock held)."""
        jobs = self._followers.get(identity)
        return jobs[0].owner if jobs else None

    def _room(self, batch: DecodeBatch, waiting: list[DecodeRow]) -> int:
        """How many of the first ``waiting`` rows may join now: rows fit while the batch stays within the runner's
        batch capacity for its longest row."""
        longest = max((row.tokens_needed for row in batch.rows), default=0)
        count = 0
        for row in waiting:
            longest = max(longest, row.tokens_needed)
            if len(batch) + count + 1 > batch.runner.batch_capacity(longest):
                break
            count += 1
        return count

    def _step(self, batch: DecodeBatch) -> list[DecodeRow]:
        self.stats.decode_steps += 1
        started = time.perf_counter()
        try:
            return batch.step()
        except Exception as error:  # a failed step loses the batch's states: its rows fail, the engine goes on
            log.exception("decoding step failed")
            for row in batch.rows:
                self._answer(row.tag, error=error)
            batch.clear()
            return []
        finally:
            self.stats.decode_seconds += time.perf_counter() - started

    def _finish(self, rows: list[DecodeRow]) -> None:
        for row in rows:
            self._answer(row.tag, result=row.result(self.runner.tokenizer))

    # ---- answering ------------------------------------------------------------------------------------------
    def _answer(self, identity: tuple, result=None, error: BaseException | None = None) -> None:
        self._streams.pop(identity, None)
        with self._followers_lock:
            jobs = self._followers.pop(identity, [])
        for job in jobs:
            _resolve(job, result=result, error=error)

    def _fail_followers(self, error: BaseException) -> None:
        with self._followers_lock:
            groups, self._followers = list(self._followers.values()), {}
        for jobs in groups:
            for job in jobs:
                _resolve(job, error=error)

    def _fail_pending(self) -> None:
        closed = EngineClosed("the engine was closed before this request ran")
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _SHUTDOWN:
                for job in item:
                    _resolve(job, error=closed)
        if not self._worker.is_alive():
            self._fail_followers(EngineClosed("the engine was closed while this request ran"))


@atexit.register
def _close_at_exit() -> None:
    """Stop every worker between two steps before the interpreter shuts down (see :data:`_live`)."""
    for scheduler in list(_live):
        scheduler.close()


def _resolve(job: Job, result=None, error: BaseException | None = None) -> None:
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
