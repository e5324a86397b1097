"""Common-ground insights (one wording many personas share) are marked as such in the result and in the app's tab."""

from __future__ import annotations

from pathlib import Path

from components import insights_tab as tab
from synth.insights import KMeansClusterer, PCAProjector, Persona, PopulationInsights
from synth.insights.personas import write_personas_jsonl
from synth.insights.population import SharedPopulation
from synth.store import PersonaStore
from tests.insights_doubles import TopicEmbedder

FILLER = "The user wants helpful, relevant answers."


def _personas() -> list[Persona]:
    """10 cooks and 10 gardeners in their own words; 12 of them also carry the same filler sentence."""
    return [
        Persona(f"user-{i}", (f"The user loves to cook dish {i}." if i < 10 else f"She tends a garden bed {i}.")
                + (f" {FILLER}" if i % 5 < 3 else ""))
        for i in range(20)
    ]


def _pipeline() -> PopulationInsights:
    return PopulationInsights(embedder=TopicEmbedder(["cook", "garden"]), clusterer=KMeansClusterer(n_clusters=2),
                              projector=PCAProjector(), n_resamples=0)


def test_the_result_tells_common_ground_from_traits() -> None:
    result = _pipeline().fit(_personas())
    common = [leaf for leaf in result.leaves if result.is_common_ground(leaf.id)]
    assert [leaf.n_users for leaf in common] == [12]
    assert sum(not result.is_common_ground(leaf.id) for leaf in result.leaves) == 2
    assert not _pipeline().set_params(common_share=None).fit(_personas()).is_common_ground(common[0].id)


def test_the_tab_labels_common_ground_insights(tmp_path: Path) -> None:
    sample = tmp_path / "sample.jsonl"
    write_personas_jsonl(_personas(), sample)
    population = SharedPopulation(PersonaStore(tmp_path / "personas.sqlite"), sample, _pipeline)
    key, _status, _figure, ranked, themes, picker = list(tab.show_population(population, True, None))[-1]
    marked = [row for row in ranked if row[3].startswith(tab.COMMON_GROUND)]
    assert [row[1] for row in marked] == [12] and len(ranked) == 3
    assert any(label.startswith(f"12 users \u2014 {tab.COMMON_GROUND}") for label, _ in picker["choices"])
    assert [row[5] for row in themes if row[4] == marked[0][0]] == [marked[0][3]]
    details = tab.open_insight(population, key, marked[0][0])[0]
    assert "Common ground: one wording that many personas share" in details
    trait = next(row for row in ranked if row not in marked)
    assert "Common ground" not in tab.open_insight(population, key, trait[0])[0]
