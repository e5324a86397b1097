"""The studio's work on the model's device: plain data in, plain data out.

On a ZeroGPU Space ``spaces.GPU`` runs each of these functions in a forked worker and pickles its arguments and
its results (each yield of a generator). So none of them takes a visitor's session: pairs, texts and the judge's
artifact go in as plain data; events, texts and numbers come out; the fitted model is rebuilt from the artifact
in the app's process. The model handle and the visitors' cancel flags are bound at wiring
(``functools.partial``) and reach a forked worker with its memory, never through a pickle. A generator stops
between two results when its consumer closes it, which is how a visitor's Cancel (or leaving) reaches the device;
in the app's own process the cancel flag, looked up by the visitor's id, also stops it between two model calls.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from components.model_handle import ModelHandle
from synth.data import PreferencePair
from synth.events import Event
from synth.generate import TwoAnswers, answer_with_and_without, draft_two_responses
from synth.lm import owned_by
from synth.parallel import FitCancelled
from synth.pipeline import DefaultJudge, SynthesizeMe

CancelFlags = Callable[[str], threading.Event]  # visitor id -> that visitor's cancel flag


@dataclass(frozen=True)
class Fitted:
    """The last result of ``fit``: the artifact the app rebuilds the judge from."""

    artifact: dict[str, Any]


@dataclass(frozen=True)
class Verdict:
    """One judge's P(reply A preferred), averaged over both orderings."""

    judge: str  # "personal" | "default"
    p_a: float


def fit(model: ModelHandle, cancel_flags: CancelFlags, visitor: str, rows: list[dict[str, Any]],
        quick: bool) -> Iterator[Event | Fitted]:
    """Fit SynthesizeMe on the visitor's pairs (official row dicts), yielding its events, then ``Fitted``."""
    estimator = SynthesizeMe(lm=model.get(timeout=0), quick=quick)
    pairs = [PreferencePair.from_dict(row) for row in rows]
    with owned_by(cancel=cancel_flags(visitor), name=visitor):
        yield from estimator.fit_events(pairs, cancel=cancel_flags(visitor))
    yield Fitted(estimator.artifact_)


def draft(model: ModelHandle, cancel_flags: CancelFlags, visitor: str, prompt: str) -> tuple[str, str]:
    """Two contrasting replies to the visitor's own prompt."""
    with owned_by(cancel=cancel_flags(visitor), name=visitor):
        return draft_two_responses(model.get(timeout=0), prompt)


def judge(model: ModelHandle, cancel_flags: CancelFlags, visitor: str, artifact: dict[str, Any], prompt: str,
          reply_a: str, reply_b: str) -> Iterator[Verdict]:
    """The visitor's judge (rebuilt from its artifact), then the default judge with the same reasoning length, on
    one pair; stops before the second judge when the visitor cancelled."""
    lm = model.get(timeout=0)
    personal = SynthesizeMe.from_artifact(artifact, lm=lm)
    cancel = cancel_flags(visitor)
    with owned_by(cancel=cancel, name=visitor):
        yield Verdict("personal", personal.predict_proba(prompt, reply_a, reply_b))
    if cancel.is_set():
        raise FitCancelled("judge test cancelled")
    default = DefaultJudge(lm=lm, reasoning_tokens=personal.settings_.reasoning_tokens,
                           max_turn_chars=personal.settings_.max_turn_chars)
    with owned_by(cancel=cancel, name=visitor):
        yield Verdict("default", default.predict_proba(prompt, reply_a, reply_b))


def answer(model: ModelHandle, cancel_flags: CancelFlags, visitor: str, artifact: dict[str, Any], prompt: str,
           seed: int) -> Iterator[TwoAnswers]:
    """The model's answers to ``prompt`` with no system prompt and with the persona's generation prompt, streamed
    side by side in an order drawn from ``seed``."""
    with owned_by(cancel=cancel_flags(visitor), name=visitor):
        yield from answer_with_and_without(model.get(timeout=0), artifact, prompt, cancel=cancel_flags(visitor),
                                           seed=seed)
