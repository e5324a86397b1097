"""Typed data that flows through the population-insights pipeline.

Inputs are `Persona` objects (one per anonymous user). `PopulationInsights.fit` returns an `InsightsResult`, whose
`to_json()` is the documented `insights.json` schema; `PopulationInsights.place` returns a `Placement`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Persona:
    """One user's persona. `statements` may carry trait statements made earlier (e.g. by an LLM facet extractor);
    when empty, the pipeline splits `text` itself."""

    user_id: str
    text: str
    statements: tuple[str, ...] = ()


@dataclass(frozen=True)
class Statement:
    """An atomic trait statement, linked back to the persona it came from, with its position on the 2-D map.

    `insight_id` is the visible insight it belongs to, or None (noise, or a cluster hidden by the privacy floor).
    """

    index: int
    user_id: str
    text: str
    x: float
    y: float
    insight_id: str | None


@dataclass(frozen=True)
class Insight:
    """A named group of similar trait statements, counted by unique users.

    Leaf insights have ids "insight-N"; broader themes have ids "theme-N" and list their children in `children`.
    `statements` are the member statements' indices into `InsightsResult.statements`, most central first.
    `stability` is the mean best Jaccard agreement of this group with the groups of re-runs on resampled users
    with other seeds (1.0 = found identically every time).
    """

    id: str
    name: str
    description: str
    keywords: tuple[str, ...]
    user_ids: tuple[str, ...]
    statements: tuple[int, ...]
    stability: float
    parent: str | None = None
    children: tuple[str, ...] = ()

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def is_theme(self) -> bool:
        return self.id.startswith("theme-")


@dataclass(frozen=True)
class InsightsResult:
    """Everything one fit produced. `insights` holds leaf insights ranked by unique users, then themes."""

    insights: tuple[Insight, ...]
    statements: tuple[Statement, ...]
    user_ids: tuple[str, ...]
    hidden_small_clusters: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def leaves(self) -> tuple[Insight, ...]:
        return tuple(insight for insight in self.insights if not insight.is_theme)

    @property
    def themes(self) -> tuple[Insight, ...]:
        return tuple(insight for insight in self.insights if insight.is_theme)

    def is_common_ground(self, insight_id: str) -> bool:
        """Whether the insight is one wording that a large share of personas carry (common ground shared by many
        personas, such as the filler models add to every persona), not a trait that sets some users apart."""
        return insight_id in self.params.get("common_insights", ())

    def get(self, insight_id: str) -> Insight:
        for insight in self.insights:
            if insight.id == insight_id:
                return insight
        raise KeyError(f"unknown insight id {insight_id!r}")

    def to_json(self) -> dict[str, Any]:
        """The `insights.json` document: leaf insights and themes share one schema; statements carry their user."""
        return {
            "insights": [
                {
                    "id": insight.id,
                    "name": insight.name,
                    "description": insight.description,
                    "keywords": list(insight.keywords),
                    "n_users": insight.n_users,
                    "user_ids": list(insight.user_ids),
                    "statements": [
                        {
                            "user_id": self.statements[index].user_id,
                            "text": self.statements[index].text,
                        }
                        for index in insight.statements
                    ],
                    "stability": round(insight.stability, 4),
                    "parent": insight.parent,
                }
                for insight in self.insights
            ],
            "hidden_small_clusters": self.hidden_small_clusters,
            "params": self.params,
        }


@dataclass(frozen=True)
class PlacedStatement:
    """One of a new persona's statements placed on the population map."""

    text: str
    x: float
    y: float
    insight_id: str | None
    similarity: float


@dataclass(frozen=True)
class NearbyInsight:
    insight_id: str
    name: str
    similarity: float
    share_of_users: float


@dataclass(frozen=True)
class Placement:
    """Where a new persona falls: its statements on the map, the nearest insights, and how typical it is.

    `typicality` is the mean, over the persona's statements, of the share of users in the insight the statement
    joins (0 for a statement that joins none). `typicality_percentile` ranks that number among the population's
    users (100 = more typical than everyone).
    """

    statements: tuple[PlacedStatement, ...]
    nearest_insights: tuple[NearbyInsight, ...]
    typicality: float
    typicality_percentile: float
