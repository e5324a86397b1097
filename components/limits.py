"""What one visitor may ask of a public studio, and the gate every model-bound event passes through.

``Limits`` holds the per-visitor bounds (each read from the environment variable named in the README's
configuration table). ``ModelGate`` lets a bounded number of model-bound events run at once, first come first
served, while any one visitor (a session) has at most one waiting or running, and any one client (an address, so
many sessions opened by one script count together) at most ``per_client``: one client cannot take every slot or
the whole line.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from dataclasses import dataclass, fields
from typing import ClassVar

import gradio as gr


@dataclass(frozen=True)
class Limits:
    """Per-visitor bounds of the studio."""

    max_upload_mb: int = 2  # $SYNTH_MAX_UPLOAD_MB: any uploaded file (pairs, artifact); Gradio refuses larger
    max_pairs: int = 40  # $SYNTH_MAX_PAIRS: labels one session holds (labelled, own prompts and imported)
    max_field_chars: int = 4000  # $SYNTH_MAX_FIELD_CHARS: any text a visitor sends (prompt, reply, persona)
    max_place_statements: int = 40  # $SYNTH_MAX_PLACE_STATEMENTS: statements placed by "Where do I fall?"
    max_model_events: int = 40  # $SYNTH_MAX_MODEL_EVENTS: fits, drafts, judge tests and answers per session
    per_client: int = 2  # $SYNTH_MODEL_EVENTS_PER_CLIENT: model-bound events one address has waiting or running

    ENVIRONMENT: ClassVar[dict[str, str]] = {"max_upload_mb": "SYNTH_MAX_UPLOAD_MB", "max_pairs": "SYNTH_MAX_PAIRS",
                   "max_field_chars": "SYNTH_MAX_FIELD_CHARS", "max_place_statements": "SYNTH_MAX_PLACE_STATEMENTS",
                   "max_model_events": "SYNTH_MAX_MODEL_EVENTS", "per_client": "SYNTH_MODEL_EVENTS_PER_CLIENT"}

    @classmethod
    def from_env(cls) -> Limits:
        values = {}
        for spec in fields(cls):
            raw = os.environ.get(cls.ENVIRONMENT[spec.name], "").strip()
            if raw:
                try:
                    values[spec.name] = int(raw)
                except ValueError:
                    raise ValueError(f"${cls.ENVIRONMENT[spec.name]} must be a whole number, got {raw!r}") from None
                if values[spec.name] < 1:
                    raise ValueError(f"${cls.ENVIRONMENT[spec.name]} must be at least 1, got {raw!r}")
        return cls(**values)

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024


class GateRefused(RuntimeError):
    """The event cannot enter the line; the message tells the visitor what to do."""


class Ticket:
    """A place in the gate's line; ``wait`` until it runs, ``release`` when done (always: use ``with``)."""

    def __init__(self, gate: ModelGate, visitor: str, client: str):
        self.gate, self.visitor, self.client = gate, visitor, client
        self.running = False

    def wait(self, timeout: float) -> bool:
        """True once this ticket holds a slot; False after ``timeout`` seconds still waiting."""
        return self.gate._wait(self, timeout)

    @property
    def ahead(self) -> int:
        """Events waiting in front of this one (0 when it is next or running)."""
        return self.gate._ahead(self)

    def release(self) -> None:
        self.gate._release(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_) -> None:
        self.release()


class ModelGate:
    """First come, first served slots for model-bound events, with per-visitor and per-client caps and at most
    ``max_line`` waiting in all.

    ``capacity`` can be set after construction (``set_capacity``), e.g. once the model has loaded and its device is
    known; until then it is 1.
    """

    def __init__(self, capacity: int = 1, per_client: int = 2, max_line: int = 32):
        self.capacity = capacity
        self.per_client = per_client
        self.max_line = max_line
        self._line: list[Ticket] = []  # waiting and running, in arrival order
        self._changed = threading.Condition()

    def set_capacity(self, capacity: int) -> None:
        with self._changed:
            self.capacity = max(1, capacity)
            self._changed.notify_all()

    def admit(self, visitor: str, client: str) -> Ticket:
        """A ticket at the end of the line; `GateRefused` when the visitor or their address already holds theirs."""
        with self._changed:
            if any(ticket.visitor == visitor for ticket in self._line):
                raise GateRefused("You already have a model action waiting or running; let it finish (or cancel it) "
                                  "and try again.")
            if len(self._line) >= self.capacity + self.max_line:
                raise GateRefused(f"The studio is busy: {len(self._line) - self.capacity} model actions are waiting. "
                                  f"Try again in a few minutes; labeling works meanwhile.")
            if Counter(ticket.client for ticket in self._line)[client] >= self.per_client:
                raise GateRefused("Too many model actions from your address are waiting or running; try again when "
                                  "one has finished.")
            ticket = Ticket(self, visitor, client)
            self._line.append(ticket)
            return ticket

    def _wait(self, ticket: Ticket, timeout: float) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self._may_run(ticket), timeout)
            ticket.running = ticket.running or self._may_run(ticket)
            return ticket.running

    def _may_run(self, ticket: Ticket) -> bool:
        return ticket in self._line and self._line.index(ticket) < self.capacity

    def _ahead(self, ticket: Ticket) -> int:
        with self._changed:
            return max(0, self._line.index(ticket) - self.capacity + 1) if ticket in self._line else 0

    def _release(self, ticket: Ticket) -> None:
        with self._changed:
            if ticket in self._line:
                self._line.remove(ticket)
            self._changed.notify_all()


def client_address(request: gr.Request | None) -> str:
    """The visitor's address: the first hop of X-Forwarded-For behind a proxy (as on Spaces), else the peer."""
    if request is None:
        return ""
    forwarded = (request.headers.get("x-forwarded-for") or "").split(",")[0].strip()
    return forwarded or (request.client.host if request.client else "")
