"""The population the studio analyses, and its fit, shared by every session and kept by store revision.

The population is the bundled synthetic sample (optional) plus the persona store's consented personas; a store
persona replaces a sample persona with the same user id. An event reads only the store's revision (one small
query): when it moved, one background thread re-fits the population once while every session keeps being served
the previous fit. When only the ratings moved ("is this you?" answers), the fit stays and only its confirmation
figures are recomputed. Each fit has a key, so a view that was shown (its ranked list, its insight ids) is answered from
that same fit until the visitor refreshes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from synth.fidelity import PopulationFidelity, Rating, population_fidelity
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
    """Personas in a fixed order, which came from the sample, and the statement ratings their authors consented to
    share (user id -> statement -> rating)."""

    personas: tuple[Persona, ...]
    sample_ids: frozenset[str] = frozenset()
    ratings: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, store: PersonaStore, sample_path: Path | None, include_sample: bool) -> Population:
        """The sample (when included and present) followed by the store's consented personas."""
        personas: dict[str, Persona] = {}
        sample_ids: set[str] = set()
        if include_sample and sample_path is not None and sample_path.exists():
            for persona in read_personas_jsonl(sample_path):
                personas[persona.user_id] = persona
                sample_ids.add(persona.user_id)
        ratings: dict[str, Mapping[str, str]] = {}
        for record in store.list(consented_only=True):
            personas[record.user_id] = record.to_persona()
            sample_ids.discard(record.user_id)
            if record.ratings:
                ratings[record.user_id] = record.ratings
        return cls(tuple(personas.values()), frozenset(sample_ids), ratings)

    def persona(self, user_id: str) -> Persona | None:
        return next((persona for persona in self.personas if persona.user_id == user_id), None)


@dataclass(frozen=True)
class PopulationFit:
    """A population with its fitted estimator (for `place`) and result; `key` names it for later events."""

    key: str
    revision: int
    include_sample: bool
    population: Population
    estimator: PopulationInsights
    result: InsightsResult
    fidelity: PopulationFidelity  # how often members confirmed their statements, under the privacy floor
    ratings_revision: int  # the store's ratings revision ``fidelity`` was computed at


def fit_key(revision: int, include_sample: bool) -> str:
    return f"r{revision}{'s' if include_sample else ''}"


class SharedPopulation:
    """The store and sample the studio reads, fitted once per store revision in a background thread.

    ``latest`` answers at once with the newest finished fit (starting a re-fit when the store moved on); only the
    very first fit is waited for. ``by_key`` returns the fit a view was made from, while it is among the newest
    ``keep``.
    """

    def __init__(self, store: PersonaStore, sample_path: Path | None = DEFAULT_SAMPLE,
                 pipeline_factory: Callable[[], PopulationInsights] = PopulationInsights, keep: int = 4) -> None:
        self.store = store
        self.sample_path = sample_path
        self.pipeline_factory = pipeline_factory
        self.keep = keep
        self._fits: OrderedDict[str, PopulationFit] = OrderedDict()
        self._wanted: dict[bool, int] = {}  # include_sample -> newest revision asked for
        self._workers: dict[bool, threading.Thread] = {}
        self._failures: dict[str, Exception] = {}
        self._changed = threading.Condition()

    def refresh(self, include_sample: bool) -> str:
        """Make sure the store's current revision is fitted (in the background); returns its key."""
        revision = self.store.revision()
        key = fit_key(revision, include_sample)
        with self._changed:
            if key in self._fits or key in self._failures:
                return key
            self._wanted[include_sample] = max(revision, self._wanted.get(include_sample, -1))
            if include_sample not in self._workers:
                worker = threading.Thread(target=self._work, args=(include_sample,), daemon=True,
                                          name=f"synth-population-{'sample' if include_sample else 'store'}")
                self._workers[include_sample] = worker
                worker.start()
        return key

    def latest(self, include_sample: bool, timeout: float | None = None) -> PopulationFit | None:
        """The newest finished fit (the current revision's, or the previous one while the new one is computed);
        with none yet, waits up to ``timeout`` seconds and returns None if still none. Raises
        `EmptyPopulationError` when the population as it is now has nobody in it."""
        key = self.refresh(include_sample)
        with self._changed:
            self._changed.wait_for(lambda: self._newest(include_sample) is not None or key in self._failures,
                                   timeout)
            newest = self._newest(include_sample)
            if newest is None and key in self._failures:
                raise self._failures[key]
        return None if newest is None else self._with_current_ratings(newest)

    def by_key(self, key: str) -> PopulationFit | None:
        with self._changed:
            return self._fits.get(key)

    def _with_current_ratings(self, fit: PopulationFit) -> PopulationFit:
        """``fit`` with the confirmation figures of the store's current ratings (recomputed only when they moved)."""
        ratings_revision = self.store.ratings_revision()
        if ratings_revision == fit.ratings_revision:
            return fit
        members = {persona.user_id for persona in fit.population.personas} - fit.population.sample_ids
        ratings = {user_id: answers for user_id, answers in self.store.ratings(consented_only=True).items()
                   if user_id in members}
        population = replace(fit.population, ratings=ratings)
        updated = replace(fit, population=population, fidelity=_fidelity(population, fit.result),
                          ratings_revision=ratings_revision)
        with self._changed:
            if self._fits.get(fit.key) is fit:
                self._fits[fit.key] = updated
        return updated

    def _newest(self, include_sample: bool) -> PopulationFit | None:
        fits = [fit for fit in self._fits.values() if fit.include_sample == include_sample]
        return max(fits, key=lambda fit: fit.revision) if fits else None

    def _work(self, include_sample: bool) -> None:
        """Fit the newest wanted revision, then again only if the store moved on meanwhile."""
        while True:
            with self._changed:
                revision = self._wanted[include_sample]
                key = fit_key(revision, include_sample)
                if key in self._fits or key in self._failures:
                    del self._workers[include_sample]
                    self._changed.notify_all()
                    return
            try:
                fit = self._fit(revision, include_sample)
            except Exception as error:  # an empty population, or a broken pipeline: shown to whoever asks
                with self._changed:
                    self._failures[key] = error
                    while len(self._failures) > self.keep:
                        self._failures.pop(next(iter(self._failures)))
                    if isinstance(error, EmptyPopulationError):  # nobody left: older fits must not show them
                        for old in [k for k, f in self._fits.items() if f.include_sample == include_sample]:
                            del self._fits[old]
                    self._changed.notify_all()
                continue
            with self._changed:
                self._fits[key] = fit
                while len(self._fits) > self.keep:
                    self._fits.popitem(last=False)
                self._changed.notify_all()

    def _fit(self, revision: int, include_sample: bool) -> PopulationFit:
        ratings_revision = self.store.ratings_revision()  # read first: a rating written meanwhile is caught later
        population = Population.load(self.store, self.sample_path, include_sample)
        if not population.personas:
            raise EmptyPopulationError(
                "No personas yet: add yours from the first tab, or include the bundled sample."
            )
        estimator = self.pipeline_factory()
        result = estimator.fit(population.personas)
        return PopulationFit(fit_key(revision, include_sample), revision, include_sample, population, estimator,
                             result, _fidelity(population, result), ratings_revision)


def _fidelity(population: Population, result: InsightsResult) -> PopulationFidelity:
    ratings = [Rating(user_id, statement, verdict) for user_id, answers in population.ratings.items()
               for statement, verdict in answers.items()]
    return population_fidelity(ratings, population.ratings.keys(), result)
