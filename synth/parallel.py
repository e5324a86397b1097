"""Run independent LM-backed jobs on threads, carrying the caller's context into each of them: DSPy's settings and
the request owner (``synth.lm.owners``), so a fit's calls on worker threads are still that fit's.

DSPy's own ParallelExecutor re-submits jobs that run past a timeout; on a local model that is busy batching, a
slow job is not a stuck one, and a re-submission would run the same work twice. This runner submits each job
exactly once and stops early on cancellation or the first error.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class FitCancelled(RuntimeError):
    """Raised inside a fit when its cancel event is set."""


def is_cancellation(error: BaseException) -> bool:
    """Whether ``error`` is, or was caused by, a FitCancelled (DSPy wraps an engine's errors in its own)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, FitCancelled):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def run_concurrently(fn: Callable[[Item], Result], items: Sequence[Item], num_threads: int,
                     cancel: threading.Event | None = None) -> Iterator[tuple[int, Result]]:
    """Yield ``(index, fn(item))`` as jobs finish; each job runs once, in a copy of the caller's context. Once
    ``cancel`` is set, jobs not started are skipped and any failure surfaces as FitCancelled: a request the engine
    dropped for the cancel arrives wrapped in DSPy's error types."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(num_threads, len(items)))) as pool:
        pending: dict[Future, int] = {}
        for index, item in enumerate(items):
            context = contextvars.copy_context()
            pending[pool.submit(context.run, _unless_cancelled, fn, item, cancel)] = index
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    error = future.exception()
                    if error is not None and (is_cancellation(error) or (cancel is not None and cancel.is_set())):
                        raise FitCancelled("fit cancelled") from error
                    yield index, future.result()
        finally:
            for future in pending:
                future.cancel()


def _unless_cancelled(fn, item, cancel: threading.Event | None):
    if cancel is not None and cancel.is_set():
        raise FitCancelled("fit cancelled")
    return fn(item)
