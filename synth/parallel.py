"""Run independent LM-backed jobs on threads, carrying the caller's DSPy context into each of them.

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


def run_concurrently(fn: Callable[[Item], Result], items: Sequence[Item], num_threads: int,
                     cancel: threading.Event | None = None) -> Iterator[tuple[int, Result]]:
    """Yield ``(index, fn(item))`` as jobs finish; each job runs once, in a copy of the caller's context."""
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
                    yield index, future.result()
        finally:
            for future in pending:
                future.cancel()


def _unless_cancelled(fn, item, cancel: threading.Event | None):
    if cancel is not None and cancel.is_set():
        raise FitCancelled("fit cancelled")
    return fn(item)
