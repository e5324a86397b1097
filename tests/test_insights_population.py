"""synth.insights.population: the studio's population (sample + consented personas) and its shared fit."""

from __future__ import annotations

from pathlib import Path

import pytest

from synth.insights.personas import write_personas_jsonl
from synth.insights.population import EmptyPopulationError, FitCache, Population, SharedPopulation
from synth.insights.types import Persona
from synth.store import PersonaRecord, PersonaStore
from tests.insights_doubles import topic_personas, topic_pipeline


def _store(tmp_path: Path) -> PersonaStore:
    store = PersonaStore(tmp_path / "personas.sqlite")
    store.add(PersonaRecord("u-1", "She bakes bread.", "demo", consent=True, artifact={"traces": ["t"]}))
    store.add(PersonaRecord("cook-0", "He likes to cook stew.", "demo", consent=True))
    store.add(PersonaRecord("u-private", "The user loves chess.", "demo", consent=False))
    return store


def _sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.jsonl"
    write_personas_jsonl(topic_personas(), path)
    return path


def test_population_is_the_sample_then_consented_personas(tmp_path: Path) -> None:
    store, sample = _store(tmp_path), _sample(tmp_path)
    population = Population.load(store, sample, include_sample=True)
    ids = [p.user_id for p in population.personas]
    assert len(ids) == len(topic_personas()) + 1 and ids[-1] == "u-1" and "u-private" not in ids
    assert population.persona("cook-0") == Persona("cook-0", "He likes to cook stew.")  # the store's wins
    assert "cook-0" not in population.sample_ids and "garden-1" in population.sample_ids
    assert population.artifacts == {"u-1": {"traces": ["t"]}}
    alone = Population.load(store, sample, include_sample=False)
    assert [p.user_id for p in alone.personas] == ["u-1", "cook-0"] and alone.sample_ids == frozenset()
    assert Population.load(store, tmp_path / "missing.jsonl", include_sample=True).personas == alone.personas


def test_fingerprint_follows_ids_texts_statements_and_order() -> None:
    a, b = Persona("a", "Likes tea."), Persona("b", "Likes chess.")
    fingerprint = Population((a, b)).fingerprint
    assert Population((a, b), {"a": {}}, frozenset({"a"})).fingerprint == fingerprint
    assert Population((b, a)).fingerprint != fingerprint
    assert Population((a, Persona("b", "Likes chess."[:-1]))).fingerprint != fingerprint
    assert Population((a, Persona("b", "Likes chess.", ("Likes chess.",)))).fingerprint != fingerprint


def test_fit_cache_fits_each_population_once_and_keeps_the_newest(tmp_path: Path) -> None:
    made = []

    def factory():
        made.append(topic_pipeline(n_resamples=0))
        return made[-1]

    cache = FitCache(factory, keep=2)
    populations = [Population(tuple(topic_personas()[: 20 + i])) for i in range(3)]
    first = cache.fit(populations[0])
    assert cache.fit(Population(tuple(topic_personas()[:20]))) is first and len(made) == 1
    assert first.estimator is made[0] and first.result is made[0].result_ and first.population is populations[0]
    cache.fit(populations[1])
    cache.fit(populations[2])
    assert cache.fit(populations[2]).estimator is made[2]
    assert cache.fit(populations[0]) is not first and len(made) == 4  # the oldest was dropped


def test_shared_population_refuses_an_empty_population(tmp_path: Path) -> None:
    shared = SharedPopulation(PersonaStore(tmp_path / "empty.sqlite"), None, FitCache(topic_pipeline))
    with pytest.raises(EmptyPopulationError, match="No personas yet"):
        shared.current_fit(include_sample=True)
    sample = _sample(tmp_path)
    fit = SharedPopulation(PersonaStore(tmp_path / "empty.sqlite"), sample, FitCache(topic_pipeline)).current_fit(True)
    assert fit.result.n_users == len(topic_personas())
