"""The population the studio analyses, and one shared fit of it.

The population is the bundled synthetic sample (optional) plus the persona store's consented personas; a store
persona replaces a sample persona with the same user id. Each call reads both again, so a persona that joined a
moment ago is in the next view; the fit is computed once per distinct population (its fingerprint) and shared by
every session.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.insights.personas import read_personas_jsonl
from synth.insights.pipeline import PopulationInsights
from synth.insights.types import InsightsResult, Persona
from synth.paths import asset_path
from synth.store import PersonaStore

DEFAULT_SAMPLE = asset_path("sample_population.jsonl")


class EmptyPopulationError(ValueError):
    """Nothing to analyse: no consented personas and no sample."""


@dataclass(frozen=True)
class Population:
    """Personas in a fixed order, the saved artifacts of those made in the app, and which came from the sample."""

    personas: tuple[Persona, ...]
    artifacts: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    sample_ids: frozenset[str] = frozenset()

    @classmethod
    def load(cls, store: PersonaStore, sample_path: Path | None, include_sample: bool) -> Population:
        """The sample (when included and present) followed by the store's consented personas."""
        personas: dict[str, Persona] = {}
        sample_ids: set[str] = set()
        if include_sample and sample_path is not None and sample_path.exists():
            for persona in read_personas_jsonl(sample_path):
                personas[persona.user_id] = persona
                sample_ids.add(persona.user_id)
        artifacts: dict[str, dict[str, Any]] = {}
        for record in store.list(consented_only=True):
            personas[record.user_id] = record.to_persona()
            sample_ids.discard(record.user_id)
            if record.artifact:
                artifacts[record.user_id] = record.artifact
        return cls(tuple(personas.values()), artifacts, frozenset(sample_ids))

    @property
    def fingerprint(self) -> str:
        """Equal for populations with the same personas (ids, texts and statements) in the same order."""
        digest = hashlib.sha256()
        for persona in self.personas:
            digest.update(f"{persona.user_id}\x00{persona.text}\x00{'|'.join(persona.statements)}\x01".encode())
        return digest.hexdigest()

    def persona(self, user_id: str) -> Persona | None:
        return next((persona for persona in self.personas if persona.user_id == user_id), None)


@dataclass(frozen=True)
class PopulationFit:
    """A population with its fitted estimator (for `place`) and result."""

    population: Population
    estimator: PopulationInsights
    result: InsightsResult


class FitCache:
    """One fit per population fingerprint, shared by every session; the newest `keep` fits are kept."""

    def __init__(self, pipeline_factory: Callable[[], PopulationInsights] = PopulationInsights, keep: int = 2) -> None:
        self.pipeline_factory = pipeline_factory
        self.keep = keep
        self._fits: dict[str, PopulationFit] = {}
        self._lock = threading.Lock()

    def fit(self, population: Population) -> PopulationFit:
        """The population's fit, computed on first request (other requests wait for it rather than fit twice)."""
        key = population.fingerprint
        with self._lock:
            if key not in self._fits:
                estimator = self.pipeline_factory()
                self._fits[key] = PopulationFit(population, estimator, estimator.fit(population.personas))
                while len(self._fits) > self.keep:
                    self._fits.pop(next(iter(self._fits)))
            return self._fits[key]


@dataclass
class SharedPopulation:
    """The store and sample the studio reads, with the fit cache every session shares."""

    store: PersonaStore
    sample_path: Path | None = DEFAULT_SAMPLE
    fits: FitCache = field(default_factory=FitCache)

    def current_fit(self, include_sample: bool) -> PopulationFit:
        """Fit of the population as it is now; raises `EmptyPopulationError` when there is nobody to analyse."""
        population = Population.load(self.store, self.sample_path, include_sample)
        if not population.personas:
            raise EmptyPopulationError(
                "No personas yet: add some from the first tab or include the bundled sample."
            )
        return self.fits.fit(population)
