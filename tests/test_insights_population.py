"""synth.insights.population: the studio's population (sample + consented personas) and its fit, kept by store
revision and re-fitted once in the background while the previous fit keeps being served."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from synth.insights.personas import write_personas_jsonl
from synth.insights.population import EmptyPopulationError, Population, SharedPopulation
from synth.insights.types import Persona
from synth.store import Evidence, PersonaRecord, PersonaStore
from tests.insights_doubles import topic_personas, topic_pipeline


def _store(tmp_path: Path) -> PersonaStore:
    store = PersonaStore(tmp_path / "personas.sqlite")
    store.add(PersonaRecord("u-1", "She bakes bread.", "demo", consent=True, evidence=Evidence(("t",)),
                            ratings={"She bakes bread.": "me"}))
    store.add(PersonaRecord("cook-0", "He likes to cook stew.", "demo", consent=True))
    store.add(PersonaRecord("u-private", "The user loves chess.", "demo", consent=False))
    return store


def _sample(tmp_path: Path) -> Path:
    path = tmp_path / "sample.jsonl"
    write_personas_jsonl(topic_personas(), path)
    return path


class CountingPipeline:
    """A pipeline factory that counts fits and can hold them until released."""

    def __init__(self, hold: bool = False) -> None:
        self.fits = 0
        self.release = threading.Event()
        if not hold:
            self.release.set()

    def __call__(self):
        pipeline = topic_pipeline(n_resamples=0)
        fit = pipeline.fit

        def counted(personas):
            self.release.wait(30)
            self.fits += 1
            return fit(personas)

        pipeline.fit = counted
        return pipeline


def test_population_is_the_sample_then_consented_personas_with_their_shared_answers(tmp_path: Path) -> None:
    store, sample = _store(tmp_path), _sample(tmp_path)
    population = Population.load(store, sample, include_sample=True)
    ids = [p.user_id for p in population.personas]
    assert len(ids) == len(topic_personas()) + 1 and ids[-1] == "u-1" and "u-private" not in ids
    assert population.persona("cook-0") == Persona("cook-0", "He likes to cook stew.")  # the store's wins
    assert "cook-0" not in population.sample_ids and "garden-1" in population.sample_ids
    assert population.ratings == {"u-1": {"She bakes bread.": "me"}}
    alone = Population.load(store, sample, include_sample=False)
    assert [p.user_id for p in alone.personas] == ["u-1", "cook-0"] and alone.sample_ids == frozenset()
    assert Population.load(store, tmp_path / "missing.jsonl", include_sample=True).personas == alone.personas


def test_an_unchanged_store_is_answered_without_reading_a_persona(tmp_path: Path, monkeypatch) -> None:
    store, pipeline = _store(tmp_path), CountingPipeline()
    shared = SharedPopulation(store, _sample(tmp_path), pipeline)
    first = shared.latest(True, timeout=60)
    reads = []
    monkeypatch.setattr(store, "list", lambda *a, **k: reads.append(1) or [])
    monkeypatch.setattr(store, "get", lambda *a, **k: reads.append(1))
    for _ in range(5):
        assert shared.latest(True, timeout=0) is first
    assert reads == [] and pipeline.fits == 1


def test_a_change_refits_once_in_the_background_while_the_previous_fit_is_served(tmp_path: Path) -> None:
    store, pipeline = _store(tmp_path), CountingPipeline()
    shared = SharedPopulation(store, _sample(tmp_path), pipeline)
    first = shared.latest(True, timeout=60)
    pipeline.release.clear()  # hold the next fits
    for i in range(3):  # three contributions while the re-fit has not finished
        store.add(PersonaRecord(f"u-new-{i}", f"The user loves to cook fish number {i}.", "demo", consent=True))
        assert shared.latest(True, timeout=0) is first  # everyone keeps the previous result meanwhile
    pipeline.release.set()
    pause = threading.Event()
    while shared.latest(True, timeout=0).revision != store.revision():
        pause.wait(0.05)
    newest = shared.latest(True, timeout=0)
    assert newest.revision == store.revision() and newest.result.n_users == first.result.n_users + 3
    assert pipeline.fits <= 3  # the first, then at most the held one and one catch-up: never one per request
    assert shared.by_key(first.key) is first  # a shown view's insight ids keep meaning the same thing


def test_a_rating_recomputes_the_confirmation_figures_without_a_refit(tmp_path: Path) -> None:
    store, pipeline = _store(tmp_path), CountingPipeline()
    shared = SharedPopulation(store, _sample(tmp_path), pipeline)
    first = shared.latest(True, timeout=60)
    assert first.fidelity.n_users == 1 and first.population.ratings == {"u-1": {"She bakes bread.": "me"}}
    store.set_ratings("cook-0", {"He likes to cook stew.": "not_me"})
    store.set_ratings("u-private", {"The user loves chess.": "me"})  # not consented: never counted
    rated = shared.latest(True, timeout=0)
    assert rated.key == first.key and rated.revision == store.revision() and pipeline.fits == 1
    assert rated.result is first.result and rated.fidelity.n_users == 2
    assert rated.population.ratings == {"u-1": {"She bakes bread.": "me"},
                                        "cook-0": {"He likes to cook stew.": "not_me"}}
    assert shared.by_key(first.key) is rated and shared.latest(True, timeout=0) is rated  # computed once


def test_keys_name_fits_until_they_are_dropped(tmp_path: Path) -> None:
    store = _store(tmp_path)
    shared = SharedPopulation(store, _sample(tmp_path), CountingPipeline(), keep=1)
    first = shared.latest(True, timeout=60)
    assert shared.by_key(first.key) is first and shared.by_key("r999") is None
    store.add(PersonaRecord("u-9", "He guards his privacy online, always.", "demo", consent=True))
    shared.refresh(True)
    while shared.latest(True, timeout=0) is first:
        threading.Event().wait(0.05)
    assert shared.by_key(first.key) is None  # kept: only the newest


def test_nobody_left_is_a_readable_error_and_old_fits_are_dropped(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "personas.sqlite")
    shared = SharedPopulation(store, None, CountingPipeline())
    with pytest.raises(EmptyPopulationError, match="No personas yet"):
        shared.latest(True, timeout=60)
    for i in range(6):
        store.add(PersonaRecord(f"u-{i}", f"The user loves to cook dish {i}.", "demo", consent=True))
    fit = shared.latest(True, timeout=60)
    assert fit.result.n_users == 6
    for i in range(6):
        store.delete(f"u-{i}")
    shared.refresh(True)
    with pytest.raises(EmptyPopulationError):
        while True:  # served until the re-fit finds nobody, then never again
            shared.latest(True, timeout=0.1)
    assert shared.by_key(fit.key) is None


def test_confirmations_count_only_shared_answers_above_the_floor(tmp_path: Path) -> None:
    store = PersonaStore(tmp_path / "personas.sqlite")
    for i in range(6):
        text = f"The user loves to cook pasta number {i}."
        store.add(PersonaRecord(f"u-{i}", text, "demo", consent=True, statements=(text,),
                                ratings={text: "me" if i < 5 else "not_me"}))
    fit = SharedPopulation(store, _sample(tmp_path), CountingPipeline()).latest(True, timeout=60)
    assert fit.fidelity.n_users == 6 and fit.fidelity.overall.confirmed == 5
    cooking = next(leaf for leaf in fit.result.leaves if "u-0" in leaf.user_ids)
    assert fit.fidelity.get(cooking.id).share.value == pytest.approx(5 / 6)
    store.set_ratings("u-5", {})  # five who answered: under a floor of six, every figure is withheld
    withheld = SharedPopulation(store, _sample(tmp_path), lambda: topic_pipeline(n_resamples=0, min_users=6)).latest(
        True, timeout=60)
    assert withheld.fidelity.overall is None and withheld.fidelity.insights == ()
