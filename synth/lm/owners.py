"""Who a local request is for: the fit or visitor whose work it is, carried with every LM call.

Several visitors' fits share one engine. Each fit runs in an :func:`owned_by` scope; every request made inside it
(on the fit's own thread, or on the worker threads of ``synth.parallel.run_concurrently``, which copy the caller's
context) is tagged with that :class:`RequestOwner`. The scheduler admits rows fairly between owners, and when an
owner's ``cancel`` is set it drops that owner's queued and running rows, nobody else's.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

_numbers = itertools.count(1)


@dataclass(eq=False)
class RequestOwner:
    """One fit's (or visitor's) identity for the scheduler; ``cancel`` set means drop its remaining work."""

    name: str = ""
    cancel: threading.Event = field(default_factory=threading.Event)
    number: int = field(default_factory=lambda: next(_numbers))

    @property
    def cancelled(self) -> bool:
        return self.cancel.is_set()

    def __repr__(self) -> str:
        return f"RequestOwner({self.name or self.number!r})"


_current: ContextVar[RequestOwner | None] = ContextVar("synth_request_owner", default=None)


def current_owner() -> RequestOwner | None:
    """The owner of requests made here, if any scope set one."""
    return _current.get()


@contextlib.contextmanager
def owned_by(owner: RequestOwner | None = None, *, cancel: threading.Event | None = None,
             name: str = "") -> Iterator[RequestOwner]:
    """Tag every LM request made inside the block (and in threads that copy this context) with ``owner``, or a new
    owner whose cancel flag is ``cancel``."""
    if owner is None:
        owner = RequestOwner(name, cancel) if cancel is not None else RequestOwner(name)
    previous = _current.get()
    token = _current.set(owner)
    try:
        yield owner
    finally:
        try:
            _current.reset(token)
        except ValueError:  # a generator resumed in another context (a server's worker thread): restore by value
            _current.set(previous)
