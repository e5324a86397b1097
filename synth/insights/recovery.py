"""How well an insights result recovers the traits planted in a synthetic population (for tests and benchmarks)."""

from __future__ import annotations

from collections import Counter

from synth.insights.synthetic import SyntheticPopulation
from synth.insights.types import InsightsResult

RECOVERED = 0.5  # a planted trait counts as recovered when a shown insight's users overlap it at least this much


def planted_trait_recovery(population: SyntheticPopulation, result: InsightsResult) -> dict[str, float]:
    """For each planted trait of the population, the best Jaccard overlap between its users and the users
    of any shown insight (recovered at >= `RECOVERED`)."""
    insight_users = [set(insight.user_ids) for insight in result.leaves]
    best: dict[str, float] = {}
    for trait in population.planted:
        truth = population.users_with_trait(trait.key)
        best[trait.key] = max(
            (len(truth & users) / len(truth | users) for users in insight_users if truth | users), default=0.0
        )
    return best


def recovered_share(recovery: dict[str, float]) -> float:
    """Share of planted traits recovered."""
    return sum(score >= RECOVERED for score in recovery.values()) / len(recovery)


def dominant_trait_ari(population: SyntheticPopulation, result: InsightsResult) -> float:
    """Adjusted Rand index between each user's dominant planted trait and the shown insight holding most of the
    user's statements (ties go to the smaller insight; a user in no shown insight forms a group of one)."""
    from sklearn.metrics import adjusted_rand_score

    sizes = {insight.id: insight.n_users for insight in result.leaves}
    per_user: dict[str, Counter[str]] = {}
    for statement in result.statements:
        if statement.insight_id is not None:
            per_user.setdefault(statement.user_id, Counter())[statement.insight_id] += 1
    truth, predicted = [], []
    for user in population.users:
        counts = per_user.get(user.persona.user_id)
        if counts:
            top = max(counts.values())
            predicted.append(min((i for i, c in counts.items() if c == top), key=lambda i: (sizes[i], i)))
        else:
            predicted.append(f"alone:{user.persona.user_id}")
        truth.append(user.dominant_trait)
    return float(adjusted_rand_score(truth, predicted))
