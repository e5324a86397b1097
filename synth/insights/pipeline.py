"""`PopulationInsights`: from many personas to named, counted, stable insights (and where a new persona falls).

fit(personas):
 1. split each persona into trait statements (or use the statements it carries);
 2. embed each distinct trait core once (cached by text hash), optionally reduce;
 3. cluster the distinct statements; a cluster's size is the number of *unique users* with a statement in it;
 4. privacy floor: clusters with fewer than `min_users` users are hidden (only their count is reported);
 5. stability: re-cluster `n_resamples` times on a random `resample_fraction` of users with other seeds, and score
    each insight by its best Jaccard match (of statements) in each re-run, averaged;
 6. themes: insights grouped by average-linkage of their centroids into about sqrt(#insights) broader themes;
 7. keywords (c-TF-IDF) and names (central statement, or an LLM contrasting members with nearest non-members);
 8. a 2-D projection of all statements for the map.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from synth.insights.embedding import (
    CachedEmbedder,
    Embedder,
    SentenceTransformerEmbedder,
)
from synth.insights.keywords import class_tfidf_keywords
from synth.insights.naming import (
    CentralStatementNamer,
    ChildNamesThemeNamer,
    GroupToName,
    Namer,
)
from synth.insights.parts import (
    AnchoredTSNEProjector,
    Clusterer,
    Projector,
    Reducer,
    SharedNeighborLouvain,
    interpolate_positions,
)
from synth.insights.splitting import SentenceSplitter, trait_core
from synth.insights.types import (
    Insight,
    InsightsResult,
    NearbyInsight,
    Persona,
    PlacedStatement,
    Placement,
    Statement,
)


class Splitter(Protocol):
    """Anything with `split(persona_text) -> list[str]`: SentenceSplitter, LLMFacetExtractor."""

    def split(self, persona: str) -> list[str]: ...


@dataclass
class _Fitted:
    """State kept after fit for `place`: unique trait vectors, their map positions, and insight geometry."""

    unique_vectors: np.ndarray
    unique_positions: np.ndarray
    leaf_ids: list[str]
    leaf_centroids: np.ndarray
    unique_leaf: np.ndarray
    leaf_min_similarity: np.ndarray
    leaf_shares: np.ndarray
    user_typicality: np.ndarray
    result: InsightsResult


def _jaccard(a: set[int], b: set[int]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def _best_match(reference: set[int], candidates: Sequence[set[int]]) -> float:
    return max(
        (
            _jaccard(reference, candidate)
            for candidate in candidates
            if candidate & reference
        ),
        default=0.0,
    )


class PopulationInsights:
    """Estimator with swappable parts; `fit(personas)` returns an `InsightsResult`, `place(text)` a `Placement`.

    Parts (each one method): `splitter.split`, `embedder.embed`, `reducer.reduce` (None = cluster the embeddings
    as they are), `clusterer.cluster`, `projector.project`, `namer.name`. `embedder=None` uses the packaged
    all-MiniLM-L6-v2 through an on-disk cache in `cache_dir` (default `~/.cache/synth/embeddings`).
    """

    def __init__(
        self,
        splitter: Splitter | None = None,
        embedder: Embedder | None = None,
        reducer: Reducer | None = None,
        clusterer: Clusterer | None = None,
        projector: Projector | None = None,
        namer: Namer | None = None,
        theme_namer: Namer | None = None,
        min_users: int = 5,
        n_resamples: int = 5,
        resample_fraction: float = 0.8,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        if min_users < 1:
            raise ValueError("min_users must be at least 1")
        if not 0 < resample_fraction <= 1:
            raise ValueError("resample_fraction must be in (0, 1]")
        self.splitter = splitter or SentenceSplitter()
        self.embedder = embedder or CachedEmbedder(
            SentenceTransformerEmbedder(), cache_dir
        )
        self.reducer = reducer
        self.clusterer = clusterer or SharedNeighborLouvain()
        self.projector = projector or AnchoredTSNEProjector()
        self.namer = namer or CentralStatementNamer()
        self.theme_namer = theme_namer or ChildNamesThemeNamer()
        self.min_users = min_users
        self.n_resamples = n_resamples
        self.resample_fraction = resample_fraction
        self.seed = seed
        self._fitted: _Fitted | None = None

    def get_params(self) -> dict[str, object]:
        return {
            "splitter": type(self.splitter).__name__,
            "embedder": getattr(
                self.embedder, "model_id", type(self.embedder).__name__
            ),
            "reducer": type(self.reducer).__name__ if self.reducer else None,
            "clusterer": type(self.clusterer).__name__,
            "projector": type(self.projector).__name__,
            "namer": type(self.namer).__name__,
            "theme_namer": type(self.theme_namer).__name__,
            "min_users": self.min_users,
            "n_resamples": self.n_resamples,
            "resample_fraction": self.resample_fraction,
            "seed": self.seed,
        }

    # ------------------------------------------------------------------ fit
    def fit(self, personas: Sequence[Persona]) -> InsightsResult:
        user_ids = [persona.user_id for persona in personas]
        if len(set(user_ids)) != len(user_ids):
            duplicates = sorted({u for u in user_ids if user_ids.count(u) > 1})[:3]
            raise ValueError(f"duplicate user ids: {', '.join(duplicates)}")
        clock = _StageClock()
        statement_users: list[int] = []
        statement_texts: list[str] = []
        for user_index, persona in enumerate(personas):
            for text in persona.statements or tuple(self.splitter.split(persona.text)):
                statement_users.append(user_index)
                statement_texts.append(text)
        if not statement_texts:
            raise ValueError("no trait statements found in the personas")

        cores = [trait_core(text) for text in statement_texts]
        unique_cores = list(dict.fromkeys(cores))
        core_index = {core: i for i, core in enumerate(unique_cores)}
        statement_unique = np.array(
            [core_index[core] for core in cores], dtype=np.int64
        )
        clock.lap("split")
        vectors = self.embedder.embed(unique_cores)
        clock.lap("embed")
        space = self.reducer.reduce(vectors) if self.reducer else vectors
        users_array = np.array(statement_users, dtype=np.int64)

        statement_labels = self.clusterer.cluster(space, self.seed)[statement_unique]
        visible, hidden = self._visible_clusters(statement_labels, users_array)

        leaf_members = [
            self._by_centrality(members, vectors, statement_unique)
            for members in visible
        ]
        centroids = _centroids(leaf_members, vectors, statement_unique)
        # For placing new statements: the insight of each distinct statement, and how far each insight reaches.
        unique_leaf = np.full(len(unique_cores), -1, dtype=np.int64)
        for leaf, members in enumerate(leaf_members):
            unique_leaf[statement_unique[members]] = leaf
        leaf_min_similarity = np.array(
            [
                float(np.min(vectors[statement_unique[m]] @ c))
                for m, c in zip(leaf_members, centroids, strict=True)
            ]
        )

        theme_groups = self._themes(centroids)
        clock.lap("cluster")
        stability = self._stability(
            space,
            vectors,
            statement_unique,
            users_array,
            len(personas),
            leaf_members,
            theme_groups,
        )
        clock.lap("stability")
        leaf_groups = self._groups_to_name(
            leaf_members, statement_texts, cores, users_array, vectors, statement_unique
        )
        names = self.namer.name(leaf_groups)
        theme_members = [
            self._by_centrality(
                np.concatenate([leaf_members[i] for i in group]),
                vectors,
                statement_unique,
            )
            for group in theme_groups
        ]
        theme_keywords = class_tfidf_keywords(
            [[cores[i] for i in members] for members in theme_members]
        )
        theme_groups_to_name = [
            GroupToName(
                members=tuple(names[i].name for i in group),
                keywords=tuple(keywords),
                neighbors=tuple(
                    names[i].name
                    for other in theme_groups
                    if other is not group
                    for i in other[:2]
                ),
                n_users=len(np.unique(users_array[members])),
            )
            for group, members, keywords in zip(
                theme_groups, theme_members, theme_keywords, strict=True
            )
        ]
        names += (
            self.theme_namer.name(theme_groups_to_name) if theme_groups_to_name else []
        )
        clock.lap("name")

        leaf_ids = [f"insight-{i + 1}" for i in range(len(leaf_members))]
        theme_ids = [f"theme-{i + 1}" for i in range(len(theme_groups))]
        parent_of = {
            leaf: theme_ids[t] for t, group in enumerate(theme_groups) for leaf in group
        }
        leaves = [
            self._insight(
                leaf_ids[i],
                names[i].name,
                names[i].description,
                leaf_groups[i],
                members,
                users_array,
                user_ids,
                stability[i],
                parent=parent_of.get(i),
            )
            for i, members in enumerate(leaf_members)
        ]
        themes = [
            self._insight(
                theme_ids[t],
                names[len(leaves) + t].name,
                names[len(leaves) + t].description,
                theme_groups_to_name[t],
                members,
                users_array,
                user_ids,
                stability[len(leaves) + t],
                children=tuple(leaf_ids[i] for i in theme_groups[t]),
            )
            for t, members in enumerate(theme_members)
        ]

        unique_positions = self.projector.project(space, self.seed)
        positions = _jitter(unique_positions[statement_unique], self.seed)
        clock.lap("project")
        statement_insight: dict[int, str] = {}
        for leaf in leaves:
            for index in leaf.statements:
                statement_insight[index] = leaf.id
        statements = tuple(
            Statement(
                index=i,
                user_id=user_ids[statement_users[i]],
                text=statement_texts[i],
                x=float(positions[i, 0]),
                y=float(positions[i, 1]),
                insight_id=statement_insight.get(i),
            )
            for i in range(len(statement_texts))
        )
        params = self.get_params() | {
            "n_personas": len(personas),
            "n_statements": len(statement_texts),
            "n_unique_statements": len(unique_cores),
            "seconds": clock.laps,
        }
        result = InsightsResult(
            insights=tuple(leaves + themes),
            statements=statements,
            user_ids=tuple(user_ids),
            hidden_small_clusters=hidden,
            params=params,
        )
        shares = np.array([leaf.n_users / len(personas) for leaf in leaves])
        share_of = {leaf.id: share for leaf, share in zip(leaves, shares, strict=True)}
        typicality = np.zeros(len(personas))
        counts = np.zeros(len(personas))
        for i, user in enumerate(statement_users):
            typicality[user] += share_of.get(statement_insight.get(i, ""), 0.0)
            counts[user] += 1
        self._fitted = _Fitted(
            unique_vectors=vectors,
            unique_positions=unique_positions,
            leaf_ids=leaf_ids,
            leaf_centroids=centroids,
            unique_leaf=unique_leaf,
            leaf_min_similarity=leaf_min_similarity,
            leaf_shares=shares,
            user_typicality=typicality / np.maximum(counts, 1),
            result=result,
        )
        return result

    @staticmethod
    def _by_centrality(
        members: np.ndarray, vectors: np.ndarray, statement_unique: np.ndarray
    ) -> np.ndarray:
        """Members ordered by similarity to their centroid, most central first (ties by statement order)."""
        member_vectors = vectors[statement_unique[members]]
        similarity = member_vectors @ _unit(member_vectors.mean(axis=0))
        return members[np.lexsort((members, -similarity))]

    @staticmethod
    def _insight(
        insight_id: str,
        name: str,
        description: str,
        group: GroupToName,
        members: np.ndarray,
        users: np.ndarray,
        user_ids: list[str],
        stability: float,
        parent: str | None = None,
        children: tuple[str, ...] = (),
    ) -> Insight:
        return Insight(
            id=insight_id,
            name=name,
            description=description,
            keywords=group.keywords,
            user_ids=tuple(sorted({user_ids[u] for u in users[members].tolist()})),
            statements=tuple(int(i) for i in members),
            stability=float(stability),
            parent=parent,
            children=children,
        )

    def _visible_clusters(
        self, labels: np.ndarray, users: np.ndarray, min_users: int | None = None
    ) -> tuple[list[np.ndarray], int]:
        """Statement indices of clusters with at least `min_users` unique users (largest first), and how many
        non-noise clusters fell under that floor."""
        floor = self.min_users if min_users is None else min_users
        visible: list[np.ndarray] = []
        hidden = 0
        for label in np.unique(labels):
            if label < 0:
                continue
            members = np.flatnonzero(labels == label)
            if len(np.unique(users[members])) >= floor:
                visible.append(members)
            else:
                hidden += 1
        visible.sort(
            key=lambda members: (-len(np.unique(users[members])), int(members[0]))
        )
        return visible, hidden

    def _themes(self, centroids: np.ndarray) -> list[list[int]]:
        """Groups of leaf indices: average-linkage (cosine) of centroids cut into round(sqrt(n)) groups; groups of one
        leaf are not themes."""
        n = len(centroids)
        if n < 4:
            return []
        tree = linkage(centroids, method="average", metric="cosine")
        labels = fcluster(tree, t=max(2, round(math.sqrt(n))), criterion="maxclust")
        groups = [list(np.flatnonzero(labels == label)) for label in np.unique(labels)]
        groups = [sorted(int(i) for i in group) for group in groups if len(group) > 1]
        return sorted(groups, key=lambda group: group[0])

    def _stability(
        self,
        space: np.ndarray,
        vectors: np.ndarray,
        statement_unique: np.ndarray,
        users: np.ndarray,
        n_users: int,
        leaf_members: list[np.ndarray],
        theme_groups: list[list[int]],
    ) -> list[float]:
        """Mean best-match Jaccard of each leaf (then each theme) against the groups of re-runs on user subsamples."""
        references = [set(m.tolist()) for m in leaf_members]
        references += [
            set(np.concatenate([leaf_members[i] for i in group]).tolist())
            for group in theme_groups
        ]
        if self.n_resamples == 0:
            return [float("nan")] * len(references)
        scores = np.zeros(len(references))
        for run in range(1, self.n_resamples + 1):
            rng = np.random.default_rng(self.seed + run)
            kept_users = rng.choice(
                n_users,
                size=max(1, round(self.resample_fraction * n_users)),
                replace=False,
            )
            kept = np.flatnonzero(np.isin(users, kept_users))
            kept_unique, local = np.unique(statement_unique[kept], return_inverse=True)
            labels = np.full(len(statement_unique), -1, dtype=np.int64)
            labels[kept] = self.clusterer.cluster(space[kept_unique], self.seed + run)[
                local
            ]
            # Re-run groups are only matched, never shown, so no floor applies (a subsample shrinks every group).
            rerun_leaves, _ = self._visible_clusters(labels, users, min_users=1)
            candidates = [set(m.tolist()) for m in rerun_leaves]
            if rerun_leaves:
                for group in self._themes(
                    _centroids(rerun_leaves, vectors, statement_unique)
                ):
                    candidates.append(
                        set(np.concatenate([rerun_leaves[i] for i in group]).tolist())
                    )
            kept_set = set(kept.tolist())
            for r, reference in enumerate(references):
                scores[r] += _best_match(reference & kept_set, candidates)
        return (scores / self.n_resamples).tolist()

    def _groups_to_name(
        self,
        leaf_members: list[np.ndarray],
        texts: list[str],
        cores: list[str],
        users: np.ndarray,
        vectors: np.ndarray,
        statement_unique: np.ndarray,
    ) -> list[GroupToName]:
        if not leaf_members:
            return []
        keywords = class_tfidf_keywords(
            [[cores[i] for i in members] for members in leaf_members]
        )
        centroids = _centroids(leaf_members, vectors, statement_unique)
        groups = []
        for index, members in enumerate(leaf_members):
            distinct = list(dict.fromkeys(texts[i] for i in members))
            nearest_others = [
                j for j in np.argsort(-(centroids @ centroids[index])) if j != index
            ][:3]
            neighbors = [
                texts[leaf_members[j][k]]
                for k in range(3)
                for j in nearest_others
                if k < len(leaf_members[j])
            ]
            groups.append(
                GroupToName(
                    members=tuple(distinct),
                    keywords=tuple(keywords[index]),
                    neighbors=tuple(dict.fromkeys(neighbors)),
                    n_users=len(np.unique(users[members])),
                )
            )
        return groups

    # ------------------------------------------------------------------ place
    @staticmethod
    def _joined_leaf(fitted: _Fitted, vector: np.ndarray, k: int = 10) -> int | None:
        """The insight a new statement joins: the similarity-weighted majority of its k nearest population
        statements, provided it lies within that insight's reach (no farther from the centroid than the insight's
        farthest member)."""
        if len(fitted.leaf_ids) == 0:
            return None
        similarities = fitted.unique_vectors @ vector
        nearest = np.argsort(-similarities)[: min(k, len(similarities))]
        votes: dict[int, float] = {}
        for index in nearest:
            votes[int(fitted.unique_leaf[index])] = votes.get(
                int(fitted.unique_leaf[index]), 0.0
            ) + max(float(similarities[index]), 0.0)
        winner = max(votes, key=lambda label: votes[label])
        if winner < 0 or votes[winner] < 0.5 * sum(votes.values()):
            return None
        if (
            float(fitted.leaf_centroids[winner] @ vector)
            < fitted.leaf_min_similarity[winner]
        ):
            return None
        return winner

    def place(self, persona_text: str, max_insights: int = 5) -> Placement:
        """Place a new persona on the fitted map: its statements, nearest insights and typicality."""
        if self._fitted is None:
            raise RuntimeError("call fit() before place()")
        fitted = self._fitted
        texts = self.splitter.split(persona_text)
        if not texts:
            raise ValueError(
                "the persona has no trait statements (write at least one sentence of 3+ words)"
            )
        vectors = self.embedder.embed([trait_core(text) for text in texts])
        positions = interpolate_positions(
            fitted.unique_vectors, fitted.unique_positions, vectors
        )
        result = fitted.result
        placed: list[PlacedStatement] = []
        shares: list[float] = []
        best_per_insight: dict[int, float] = {}
        for text, vector, position in zip(texts, vectors, positions, strict=True):
            leaf = self._joined_leaf(fitted, vector)
            similarities = fitted.leaf_centroids @ vector
            for index, similarity in enumerate(similarities):
                best_per_insight[index] = max(
                    best_per_insight.get(index, -1.0), float(similarity)
                )
            placed.append(
                PlacedStatement(
                    text=text,
                    x=float(position[0]),
                    y=float(position[1]),
                    insight_id=fitted.leaf_ids[leaf] if leaf is not None else None,
                    similarity=float(similarities[leaf])
                    if leaf is not None
                    else float(similarities.max(initial=0.0)),
                )
            )
            shares.append(float(fitted.leaf_shares[leaf]) if leaf is not None else 0.0)
        ranked = sorted(best_per_insight.items(), key=lambda item: -item[1])[
            :max_insights
        ]
        nearest_insights = tuple(
            NearbyInsight(
                insight_id=fitted.leaf_ids[leaf],
                name=result.get(fitted.leaf_ids[leaf]).name,
                similarity=similarity,
                share_of_users=float(fitted.leaf_shares[leaf]),
            )
            for leaf, similarity in ranked
        )
        typicality = float(np.mean(shares))
        percentile = 100.0 * float(np.mean(fitted.user_typicality < typicality))
        return Placement(tuple(placed), nearest_insights, typicality, percentile)


class _StageClock:
    """Wall time per pipeline stage, reported in `params["seconds"]`."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self._last, 3)
        self._last = now


def _centroids(
    groups: Sequence[np.ndarray], vectors: np.ndarray, statement_unique: np.ndarray
) -> np.ndarray:
    if not groups:
        return np.zeros((0, vectors.shape[1]), dtype=np.float32)
    return np.stack(
        [_unit(vectors[statement_unique[members]].mean(axis=0)) for members in groups]
    )


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _jitter(positions: np.ndarray, seed: int) -> np.ndarray:
    """Spread identical statements slightly so the map shows how many there are (1% of the map's extent)."""
    if len(positions) == 0:
        return positions
    extent = np.ptp(positions, axis=0)
    rng = np.random.default_rng(seed)
    return positions + rng.normal(
        scale=0.01 * np.maximum(extent, 1e-9), size=positions.shape
    )
