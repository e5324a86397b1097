"""Typed progress events: the only thing the engine tells its views (CLI, app) while it works."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Stage(str, Enum):
    BOOTSTRAP = "bootstrap"  # step 1: reasoning traces without a persona
    PERSONA = "persona"  # step 2: persona from the kept reasoning
    DEMOS = "demos"  # step 3: demo sets with the persona in the instructions

    @property
    def title(self) -> str:
        return {"bootstrap": "1 · Bootstrap reasoning", "persona": "2 · Synthesize persona",
                "demos": "3 · Select demos"}[self.value]


@dataclass(frozen=True)
class Event:
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["type"] = type(self).__name__
        return {k: (v.value if isinstance(v, Enum) else v) for k, v in data.items()}


@dataclass(frozen=True)
class StageStarted(Event):
    stage: Stage
    total_steps: int  # LM-backed units this stage will report (traces + candidates, or 1 for the persona)


@dataclass(frozen=True)
class StageFinished(Event):
    stage: Stage
    seconds: float


@dataclass(frozen=True)
class TraceBootstrapped(Event):
    """One reasoning trace, kept only if the model gave its verdict itself and it matches the user's real choice."""

    stage: Stage
    pair_index: int
    prompt: str
    reasoning: str
    verdict: str  # "First" | "Second" | "Tie"
    user_choice: str  # "First" | "Second"
    kept: bool
    p_first: float | None
    verdict_source: str = "probabilities"  # only "probabilities" and "parsed" verify; see synth.judge


@dataclass(frozen=True)
class CandidateScored(Event):
    stage: Stage
    candidate_id: int
    kind: str  # "zero-shot" | "labels-only" | "bootstrapped"
    n_demos: int
    accuracy: float
    mean_p_correct: float | None
    best_so_far: bool


@dataclass(frozen=True)
class PersonaReady(Event):
    persona: str


@dataclass(frozen=True)
class DemosChosen(Event):
    candidate_id: int
    n_demos: int
    validation_accuracy: float


@dataclass(frozen=True)
class FitFinished(Event):
    seconds: float
    validation_accuracy: float
    lm_calls: int
    verdict_fallbacks: int
    summary: dict[str, Any] = field(default_factory=dict)


EventCallback = Callable[[Event], None]
