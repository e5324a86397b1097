"""synth.insights.recovery: how many planted traits a result recovers, and how well it groups users."""

from __future__ import annotations

import pytest

from synth.insights.recovery import dominant_trait_ari, planted_trait_recovery, recovered_share
from synth.insights.synthetic import PlantedFacet, SyntheticPopulation, SyntheticUser
from synth.insights.types import Insight, InsightsResult, Persona, Statement


def _population() -> SyntheticPopulation:
    planted_facets = tuple(PlantedFacet(key, "topics", key) for key in ("tea", "chess", "bees"))
    planted = {"a": ("tea", "bees"), "b": ("tea",), "c": ("tea",), "d": ("chess",), "e": ("chess", "bees")}
    users = tuple(SyntheticUser(Persona(user, "..."), keys[0], keys) for user, keys in planted.items())
    return SyntheticPopulation(users, seed=0, planted=planted_facets)


def _result(insight_users: dict[str, list[str]]) -> InsightsResult:
    statements, insights = [], []
    for insight_id, users in insight_users.items():
        indices = []
        for user in users:
            indices.append(len(statements))
            statements.append(Statement(len(statements), user, "...", 0.0, 0.0, insight_id))
        insights.append(Insight(insight_id, insight_id, "", (), tuple(sorted(users)), tuple(indices), 1.0))
    return InsightsResult(tuple(insights), tuple(statements), tuple("abcde"), 0)


def test_recovery_is_the_best_jaccard_of_each_planted_trait() -> None:
    result = _result({"insight-1": ["a", "b", "c"], "insight-2": ["d", "e", "a"]})
    recovery = planted_trait_recovery(_population(), result)
    assert recovery == pytest.approx({"tea": 1.0, "chess": 2 / 3, "bees": 2 / 3})
    assert recovered_share(recovery) == 1.0
    assert recovered_share(planted_trait_recovery(_population(), _result({}))) == 0.0


def test_dominant_trait_ari_is_one_for_a_perfect_grouping() -> None:
    population = _population()
    assert dominant_trait_ari(population, _result({"insight-1": ["a", "b", "c"], "insight-2": ["d", "e"]})) == 1.0
    assert dominant_trait_ari(population, _result({"insight-1": ["a", "b", "c", "d", "e"]})) == 0.0
