"""`PopulationInsights`: from many personas to named, counted, stable insights (and where a new persona falls).

`fit(personas)` runs these stages, each one method that reads the previous stages' fitted attributes and sets
its own:
 1. `_split`: each persona into trait statements (or the statements it carries), and their distinct trait cores;
    `_find_common_wordings`: wordings that a large share of personas share (filler, like stop words);
 2. `_find_filler_words`: words spread over many clusters of a first pass on a sample (like stop words, they tell
    no trait apart); `_embed`: each distinct core once (cached by text hash), its filler words left out of the
    embedder's pooling; `_reduce`: fewer dimensions, when a reducer is given;
 3. `_cluster`: the distinct cores (each common wording is a cluster of its own; optionally, clusters set apart by
    the same distinctive words are joined); a cluster's size is the number of *unique users* with a statement in
    it, and clusters with fewer than `min_users` users are hidden (privacy floor: only their count is reported);
 4. `_group_themes`: insights grouped by average-linkage of their centroids into about sqrt(#insights) themes,
    a theme that would hold more than `max_theme_share` of the users split along that tree (no catch-all parent);
 5. `_measure_stability`: re-cluster `n_resamples` times on a random `resample_fraction` of users with other
    seeds, and score each insight by its best Jaccard match (of statements) in each re-run, averaged;
 6. `_name`: keywords (c-TF-IDF) and names (central statement, or an LLM contrasting members with nearest
    non-members);
 7. `_project`: a 2-D position of every statement for the map;
then `_assemble` builds the `InsightsResult`.
"""

from __future__ import annotations

import inspect
import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np
from scipy import sparse
from scipy.cluster.hierarchy import fcluster, linkage, to_tree

from synth.insights.embedding import (
    CachedEmbedder,
    Embedder,
    SentenceTransformerEmbedder,
    can_ignore_words,
    words_of,
)
from synth.insights.keywords import class_tfidf_keywords, merge_by_vocabulary
from synth.insights.naming import (
    CentralStatementNamer,
    ChildNamesThemeNamer,
    GroupName,
    GroupToName,
    Namer,
)
from synth.insights.parts import (
    FIT_SAMPLE,
    AnchoredTSNEProjector,
    Clusterer,
    CompleteLinkageClusterer,
    Projector,
    Reducer,
    interpolate_positions,
    seeded_sample,
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


class PopulationInsights:
    """Estimator with swappable parts; `fit(personas)` returns an `InsightsResult`, `place(text)` a `Placement`.

    Parts (each one method): `splitter.split`, `embedder.embed`, `reducer.reduce`, `clusterer.cluster`,
    `projector.project`, `namer.name`. A part left as None gets its default at `fit`: `embedder=None` is the
    packaged all-MiniLM-L6-v2 through an on-disk cache in `cache_dir` (default `synth.paths.cache_dir("embeddings")`);
    `clusterer=None` is `CompleteLinkageClusterer` on the embeddings as they are (no reduction, unless a `reducer`
    is passed); `HDBSCANClusterer` after `UMAPReducer` (BERTopic's pair) and the other parts in
    `synth.insights.parts` can be passed in.

    As in scikit-learn, `__init__` only stores the parameters (`get_params` / `set_params`), and `fit` sets the
    fitted attributes, named with a trailing underscore:

    - `splitter_`, `embedder_`, `reducer_` (None: no reduction), `clusterer_`, `projector_`, `namer_`,
      `theme_namer_`: the parts used;
    - `user_ids_`: persona ids in input order;
    - `statements_`: every trait statement's text; `statement_users_`: its persona's index in `user_ids_`;
    - `cores_`: the distinct trait cores (what is embedded); `statement_cores_`: each statement's index in `cores_`;
    - `core_common_`: each core's common wording (-1 = none; see `common_share`);
    - `filler_words_`: the words left out of every core's embedding (see `filler_share`; empty when off);
    - `embeddings_`: one unit vector per core; `space_`: what the clusterer saw (`embeddings_`, or reduced);
    - `labels_`: each statement's cluster from the clusterer (-1 = noise), before the privacy floor;
      `n_hidden_`: the clusters under the floor;
    - `leaf_members_`: statement indices of each shown insight (largest first), most central first;
      `leaf_centroids_`: their unit centroids; `leaf_reach_`: each one's lowest member similarity to its centroid;
      `core_leaves_`: the shown insight of each core (-1 = none);
    - `theme_groups_`: leaf indices of each theme; `theme_members_`: statement indices of each theme;
    - `stability_`: stability of each leaf, then of each theme;
    - `insights_`: the named leaves, then the themes;
    - `core_positions_`: each core's map position; `statement_positions_`: each statement's (spread slightly);
    - `common_insights_`: ids of the shown insights that are common wordings (common ground, not traits);
    - `leaf_shares_`: each leaf's share of users; `user_typicality_`: each user's typicality (see `Placement`);
    - `result_`: the `InsightsResult` that `fit` returned.

    `common_share`: a wording (a core, lowercased, punctuation dropped) that at least this share of personas
    carry, and at least `min_users`, is common ground, not a trait: as a stop word's document frequency tells
    nothing about a document, filler every persona repeats ("Helpfulness: helpful, relevant answers") tells no
    user apart. A trait is many wordings each held by a few users, so the clusterer, which sees distinct
    wordings, cannot give one shared wording a cluster of its own and would merge it into the nearest trait.
    Each common wording is its own insight instead (listed in `params["common_insights"]`); None turns this off.

    `filler_share`: a word (as `synth.insights.embedding.words_of` spells it) found in at least this share of the
    clusters of a first pass, and in at least 3 of them, is filler: like a stop word's spread over documents, a word
    spread over many traits ("the", "answers", "in everyday life") tells none apart, yet it weighs as much as a
    trait's own words in a sentence embedding's mean over tokens, and pulls statements of different traits together.
    The first pass clusters whole-text embeddings of a seeded sample of cores (at most `FIT_SAMPLE`); then every
    core is embedded with its filler words left out of the pooling (`embed_ignoring`: the words still give the
    others their context). Needs an embedder with `embed_ignoring` (the default's sentence-transformers model);
    with another (precomputed vectors, say) nothing is left out. None turns this off.

    `merge_similarity`: clusters whose c-TF-IDF vectors (the words that set each apart, as in BERTopic's topic
    reduction) have at least this cosine are joined, since the same distinctive words make them one trait in
    several wordings (a density clusterer splits a trait by wording, e.g. one cluster per bold label a model chose).
    None, the default, joins nothing: with the default clusterer joining cost planted traits on the tuning
    generator (docs/insights.md); with `HDBSCANClusterer`, 0.16 is the value measured there.

    `max_theme_share`: a theme (a group of insights, the broad level above them) holds at most this share of the
    users; one that would hold more is split along the insights' tree. A parent that almost everyone falls into
    (every persona says something about answer style) sets no one apart: a catch-all, not a theme.
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
        common_share: float | None = 0.2,
        filler_share: float | None = 0.1,
        merge_similarity: float | None = None,
        max_theme_share: float = 0.5,
    ) -> None:
        self.splitter = splitter
        self.embedder = embedder
        self.reducer = reducer
        self.clusterer = clusterer
        self.projector = projector
        self.namer = namer
        self.theme_namer = theme_namer
        self.min_users = min_users
        self.n_resamples = n_resamples
        self.resample_fraction = resample_fraction
        self.seed = seed
        self.cache_dir = cache_dir
        self.common_share = common_share
        self.filler_share = filler_share
        self.merge_similarity = merge_similarity
        self.max_theme_share = max_theme_share

    @classmethod
    def _parameter_names(cls) -> list[str]:
        return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters as given (parts are returned as the objects passed, None for defaults)."""
        return {name: getattr(self, name) for name in self._parameter_names()}

    def set_params(self, **params: Any) -> PopulationInsights:
        """Change constructor parameters; they take effect at the next `fit`."""
        unknown = sorted(set(params) - set(self._parameter_names()))
        if unknown:
            raise ValueError(f"unknown parameters for PopulationInsights: {', '.join(unknown)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self

    # ------------------------------------------------------------------ fit
    def fit(self, personas: Sequence[Persona]) -> InsightsResult:
        """Run every stage on `personas` and return the result (also kept as `result_`, for `place`)."""
        self._forget_fit()
        self._resolve_parts()
        clock = _StageClock()
        self._split(personas)
        self._find_common_wordings()
        clock.lap("split")
        self._find_filler_words()
        self._embed()
        clock.lap("embed")
        self._reduce()
        clock.lap("reduce")
        self._cluster()
        self._group_themes()
        clock.lap("cluster")
        self._measure_stability()
        clock.lap("stability")
        self._name()
        clock.lap("name")
        self._project()
        clock.lap("project")
        self._assemble(clock.laps)
        return self.result_

    def texts_to_embed(self, personas: Sequence[Persona]) -> list[str]:
        """The distinct texts (trait cores) `fit` would embed, in order: what a file for `PrecomputedEmbedder` must
        hold. Leaves no fitted attributes behind."""
        self._forget_fit()
        try:
            self._resolve_parts()
            self._split(personas)
            return list(self.cores_)
        finally:
            self._forget_fit()

    def _forget_fit(self) -> None:
        """Drop an earlier fit, so a failed fit never leaves attributes of two different fits."""
        for name in [name for name in vars(self) if name.endswith("_")]:
            delattr(self, name)

    def _resolve_parts(self) -> None:
        if self.min_users < 1:
            raise ValueError("min_users must be at least 1")
        if not 0 < self.resample_fraction <= 1:
            raise ValueError("resample_fraction must be in (0, 1]")
        if self.common_share is not None and not 0 < self.common_share <= 1:
            raise ValueError("common_share must be in (0, 1] or None")
        if self.filler_share is not None and not 0 < self.filler_share <= 1:
            raise ValueError("filler_share must be in (0, 1] or None")
        if self.merge_similarity is not None and not 0 < self.merge_similarity <= 1:
            raise ValueError("merge_similarity must be in (0, 1] or None")
        if not 0 < self.max_theme_share <= 1:
            raise ValueError("max_theme_share must be in (0, 1]")
        self.splitter_ = self.splitter or SentenceSplitter()
        self.embedder_ = self.embedder or CachedEmbedder(SentenceTransformerEmbedder(), self.cache_dir)
        self.reducer_ = self.reducer
        self.clusterer_ = self.clusterer or CompleteLinkageClusterer()
        self.projector_ = self.projector or AnchoredTSNEProjector()
        self.namer_ = self.namer or CentralStatementNamer()
        self.theme_namer_ = self.theme_namer or ChildNamesThemeNamer()

    def _split(self, personas: Sequence[Persona]) -> None:
        user_ids = [persona.user_id for persona in personas]
        if len(set(user_ids)) != len(user_ids):
            duplicates = sorted({u for u in user_ids if user_ids.count(u) > 1})[:3]
            raise ValueError(f"duplicate user ids: {', '.join(duplicates)}")
        statement_users: list[int] = []
        statements: list[str] = []
        for user_index, persona in enumerate(personas):
            for text in persona.statements or tuple(self.splitter_.split(persona.text)):
                statement_users.append(user_index)
                statements.append(text)
        if not statements:
            raise ValueError("no trait statements found in the personas")
        cores = [trait_core(text) for text in statements]
        self.user_ids_ = user_ids
        self.statements_ = statements
        self.statement_users_ = np.array(statement_users, dtype=np.int64)
        self.cores_ = list(dict.fromkeys(cores))
        core_index = {core: i for i, core in enumerate(self.cores_)}
        self.statement_cores_ = np.array([core_index[core] for core in cores], dtype=np.int64)

    def _find_common_wordings(self) -> None:
        self.core_common_ = np.full(len(self.cores_), -1, dtype=np.int64)
        if self.common_share is None:
            return
        wordings, core_wording = np.unique([_wording(core) for core in self.cores_], return_inverse=True)
        statement_wording = core_wording[self.statement_cores_]
        n_user_ids = len(self.user_ids_)
        pairs = np.unique(statement_wording * n_user_ids + self.statement_users_)
        n_users = np.bincount(pairs // n_user_ids, minlength=len(wordings))
        common = np.flatnonzero(n_users >= max(self.min_users, self.common_share * n_user_ids))
        self.core_common_ = np.searchsorted(common, core_wording)
        self.core_common_[~np.isin(core_wording, common)] = -1

    def _cluster_cores(self, cores: np.ndarray, seed: int) -> np.ndarray:
        """Cluster labels of `cores` (indices into `cores_`): each common wording its own cluster, the rest as the
        clusterer labels them, and clusters of the same distinctive words joined when `merge_similarity` is set."""
        common = self.core_common_[cores]
        labels = np.full(len(cores), -1, dtype=np.int64)
        rest = np.flatnonzero(common < 0)
        if len(rest):
            labels[rest] = self.clusterer_.cluster(self.space_[cores[rest]], seed)
            if self.merge_similarity is not None:
                labels[rest] = merge_by_vocabulary(
                    labels[rest], [self.cores_[i] for i in cores[rest]], self.merge_similarity, seed=seed
                )
        labels[common >= 0] = labels.max(initial=-1) + 1 + common[common >= 0]
        return labels

    def _find_filler_words(self) -> None:
        self.filler_words_ = frozenset()
        if self.filler_share is None or not can_ignore_words(self.embedder_):
            return
        distinct = np.flatnonzero(self.core_common_ < 0)  # a common wording is a cluster of its own
        sample = distinct[seeded_sample(len(distinct), FIT_SAMPLE, self.seed)]
        if len(sample) < 2:
            return
        vectors = self.embedder_.embed([self.cores_[i] for i in sample])
        labels = self.clusterer_.cluster(self.reducer_.reduce(vectors) if self.reducer_ else vectors, self.seed)
        clusters_of: dict[str, set[int]] = {}
        for core, label in zip(sample, labels, strict=True):
            if label >= 0:
                for word in words_of(self.cores_[core]):
                    clusters_of.setdefault(word, set()).add(int(label))
        n_clusters = len(set(labels[labels >= 0].tolist()))
        needed = max(MIN_FILLER_CLUSTERS, self.filler_share * n_clusters)
        self.filler_words_ = frozenset(word for word, clusters in clusters_of.items() if len(clusters) >= needed)

    def _embed(self) -> None:
        self.embeddings_ = self._embed_cores(self.cores_)

    def _embed_cores(self, cores: Sequence[str]) -> np.ndarray:
        if self.filler_words_:
            return self.embedder_.embed_ignoring(cores, self.filler_words_)
        return self.embedder_.embed(cores)

    def _reduce(self) -> None:
        self.space_ = self.reducer_.reduce(self.embeddings_) if self.reducer_ else self.embeddings_

    def _cluster(self) -> None:
        self.labels_ = self._cluster_cores(np.arange(len(self.cores_)), self.seed)[self.statement_cores_]
        visible, self.n_hidden_ = _visible_clusters(self.labels_, self.statement_users_, self.min_users)
        self.leaf_members_ = [self._by_centrality(members) for members in visible]
        self.leaf_centroids_ = self._centroids(self.leaf_members_)
        # For placing new statements: the insight of each core, and how far each insight reaches.
        self.core_leaves_ = np.full(len(self.cores_), -1, dtype=np.int64)
        for leaf, members in enumerate(self.leaf_members_):
            self.core_leaves_[self.statement_cores_[members]] = leaf
        self.leaf_reach_ = np.array(
            [
                float(np.min(self.embeddings_[self.statement_cores_[members]] @ centroid))
                for members, centroid in zip(self.leaf_members_, self.leaf_centroids_, strict=True)
            ]
        )

    def _group_themes(self) -> None:
        self.theme_groups_ = _themes(self.leaf_centroids_, self._user_sets(self.leaf_members_),
                                     self.max_theme_share * len(self.user_ids_))
        self.theme_members_ = [
            self._by_centrality(np.concatenate([self.leaf_members_[i] for i in group]))
            for group in self.theme_groups_
        ]

    def _measure_stability(self) -> None:
        """Mean best-match Jaccard of each leaf (then each theme) against the groups of re-runs on user subsamples."""
        n_statements = len(self.statement_cores_)
        leaf_of = _group_labels(self.leaf_members_, n_statements)
        theme_of = _group_labels(self.theme_members_, n_statements)
        n_references = len(self.leaf_members_) + len(self.theme_members_)
        if self.n_resamples == 0:
            self.stability_ = [float("nan")] * n_references
            return
        n_users = len(self.user_ids_)
        users = self.statement_users_
        scores = np.zeros(n_references)
        for run in range(1, self.n_resamples + 1):
            rng = np.random.default_rng(self.seed + run)
            kept_users = rng.choice(n_users, size=max(1, round(self.resample_fraction * n_users)), replace=False)
            kept = np.flatnonzero(np.isin(users, kept_users))
            kept_cores, local = np.unique(self.statement_cores_[kept], return_inverse=True)
            labels = np.full(n_statements, -1, dtype=np.int64)
            labels[kept] = self._cluster_cores(kept_cores, self.seed + run)[local]
            # Re-run groups are only matched, never shown, so no floor applies (a subsample shrinks every group).
            rerun_leaves, _ = _visible_clusters(labels, users, 1)
            candidates = [_group_labels(rerun_leaves, n_statements)]
            if rerun_leaves:
                themes = _themes(self._centroids(rerun_leaves), self._user_sets(rerun_leaves),
                                 self.max_theme_share * len(kept_users))
                rerun_themes = [np.concatenate([rerun_leaves[i] for i in group]) for group in themes]
                candidates.append(_group_labels(rerun_themes, n_statements))
            best = np.zeros(n_references)
            for candidate in candidates:
                best = np.maximum(best, np.concatenate([
                    _best_jaccards(leaf_of, candidate, kept, len(self.leaf_members_)),
                    _best_jaccards(theme_of, candidate, kept, len(self.theme_members_)),
                ]))
            scores += best
        self.stability_ = (scores / self.n_resamples).tolist()

    def _name(self) -> None:
        leaf_groups = self._leaf_groups_to_name()
        names = self.namer_.name(leaf_groups)
        theme_groups = self._theme_groups_to_name(names)
        names += self.theme_namer_.name(theme_groups) if theme_groups else []
        leaf_ids = [f"insight-{i + 1}" for i in range(len(self.leaf_members_))]
        theme_ids = [f"theme-{i + 1}" for i in range(len(self.theme_groups_))]
        parent_of = {leaf: theme_ids[t] for t, group in enumerate(self.theme_groups_) for leaf in group}
        leaves = [
            self._insight(leaf_ids[i], names[i], leaf_groups[i], members, self.stability_[i], parent=parent_of.get(i))
            for i, members in enumerate(self.leaf_members_)
        ]
        themes = [
            self._insight(
                theme_ids[t],
                names[len(leaves) + t],
                theme_groups[t],
                members,
                self.stability_[len(leaves) + t],
                children=tuple(leaf_ids[i] for i in self.theme_groups_[t]),
            )
            for t, members in enumerate(self.theme_members_)
        ]
        self.insights_ = tuple(leaves + themes)
        self.common_insights_ = [
            leaf_ids[i] for i, members in enumerate(self.leaf_members_)
            if bool(np.all(self.core_common_[self.statement_cores_[members]] >= 0))
        ]

    def _project(self) -> None:
        self.core_positions_ = self.projector_.project(self.embeddings_, self.seed)
        self.statement_positions_ = _jitter(self.core_positions_[self.statement_cores_], self.seed)

    def _assemble(self, seconds: dict[str, float]) -> None:
        leaves = self.insights_[: len(self.leaf_members_)]
        statement_insight = {index: leaf.id for leaf in leaves for index in leaf.statements}
        statements = tuple(
            Statement(
                index=i,
                user_id=self.user_ids_[self.statement_users_[i]],
                text=text,
                x=float(self.statement_positions_[i, 0]),
                y=float(self.statement_positions_[i, 1]),
                insight_id=statement_insight.get(i),
            )
            for i, text in enumerate(self.statements_)
        )
        n_users = len(self.user_ids_)
        params = self._recorded_params() | {
            "n_personas": n_users,
            "n_statements": len(self.statements_),
            "n_unique_statements": len(self.cores_),
            "common_insights": list(self.common_insights_),
            "seconds": seconds,
        }
        self.result_ = InsightsResult(
            insights=self.insights_,
            statements=statements,
            user_ids=tuple(self.user_ids_),
            hidden_small_clusters=self.n_hidden_,
            params=params,
        )
        self.leaf_shares_ = np.array([leaf.n_users / n_users for leaf in leaves])
        statement_shares = np.zeros(len(self.statements_))
        for leaf, members in enumerate(self.leaf_members_):
            statement_shares[members] = self.leaf_shares_[leaf]
        typicality = np.bincount(self.statement_users_, weights=statement_shares, minlength=n_users)
        counts = np.bincount(self.statement_users_, minlength=n_users)
        self.user_typicality_ = typicality / np.maximum(counts, 1)

    def _recorded_params(self) -> dict[str, object]:
        """The parameters a result records: parts by class name (the embedder by model id)."""
        return {
            "splitter": type(self.splitter_).__name__,
            "embedder": getattr(self.embedder_, "model_id", type(self.embedder_).__name__),
            "reducer": type(self.reducer_).__name__ if self.reducer_ else None,
            "clusterer": type(self.clusterer_).__name__,
            "projector": type(self.projector_).__name__,
            "namer": type(self.namer_).__name__,
            "theme_namer": type(self.theme_namer_).__name__,
            "min_users": self.min_users,
            "n_resamples": self.n_resamples,
            "resample_fraction": self.resample_fraction,
            "seed": self.seed,
            "common_share": self.common_share,
            "filler_share": self.filler_share,
            "filler_words": sorted(self.filler_words_),
            "merge_similarity": self.merge_similarity,
            "max_theme_share": self.max_theme_share,
        }

    # ------------------------------------------------------------------ helpers of the stages
    def _by_centrality(self, members: np.ndarray) -> np.ndarray:
        """Members ordered by similarity to their centroid, most central first (ties by statement order)."""
        member_vectors = self.embeddings_[self.statement_cores_[members]]
        similarity = member_vectors @ _unit(member_vectors.mean(axis=0))
        return members[np.lexsort((members, -similarity))]

    def _user_sets(self, groups: Sequence[np.ndarray]) -> list[set[int]]:
        return [set(self.statement_users_[members].tolist()) for members in groups]

    def _centroids(self, groups: Sequence[np.ndarray]) -> np.ndarray:
        if not groups:
            return np.zeros((0, self.embeddings_.shape[1]), dtype=np.float32)
        return np.stack([_unit(self.embeddings_[self.statement_cores_[members]].mean(axis=0)) for members in groups])

    def _leaf_groups_to_name(self) -> list[GroupToName]:
        """Each leaf's distinct statements (the `MAX_MEMBERS_TO_NAME` most central), keywords, and the most central
        statements of its nearest leaves."""
        if not self.leaf_members_:
            return []
        texts = self.statements_
        keywords = class_tfidf_keywords([self._member_cores(members) for members in self.leaf_members_])
        centroids = self.leaf_centroids_
        groups = []
        for index, members in enumerate(self.leaf_members_):
            distinct = _first_distinct((texts[i] for i in members), MAX_MEMBERS_TO_NAME)
            nearest_others = [j for j in np.argsort(-(centroids @ centroids[index])) if j != index][:3]
            neighbors = [
                texts[self.leaf_members_[j][k]]
                for k in range(3)
                for j in nearest_others
                if k < len(self.leaf_members_[j])
            ]
            groups.append(
                GroupToName(
                    members=tuple(distinct),
                    keywords=tuple(keywords[index]),
                    neighbors=tuple(dict.fromkeys(neighbors)),
                    n_users=self._n_users(members),
                )
            )
        return groups

    def _theme_groups_to_name(self, leaf_names: Sequence[GroupName]) -> list[GroupToName]:
        """Each theme's leaf names, keywords, and the names of the first two leaves of every other theme."""
        keywords = class_tfidf_keywords([self._member_cores(members) for members in self.theme_members_])
        return [
            GroupToName(
                members=tuple(leaf_names[i].name for i in group),
                keywords=tuple(theme_keywords),
                neighbors=tuple(
                    leaf_names[i].name for other in self.theme_groups_ if other is not group for i in other[:2]
                ),
                n_users=self._n_users(members),
            )
            for group, members, theme_keywords in zip(self.theme_groups_, self.theme_members_, keywords, strict=True)
        ]

    def _member_cores(self, members: np.ndarray) -> list[str]:
        return [self.cores_[self.statement_cores_[i]] for i in members]

    def _n_users(self, members: np.ndarray) -> int:
        return len(np.unique(self.statement_users_[members]))

    def _insight(
        self,
        insight_id: str,
        name: GroupName,
        group: GroupToName,
        members: np.ndarray,
        stability: float,
        parent: str | None = None,
        children: tuple[str, ...] = (),
    ) -> Insight:
        return Insight(
            id=insight_id,
            name=name.name,
            description=name.description,
            keywords=group.keywords,
            user_ids=tuple(sorted({self.user_ids_[u] for u in self.statement_users_[members].tolist()})),
            statements=tuple(int(i) for i in members),
            stability=float(stability),
            parent=parent,
            children=children,
        )

    # ------------------------------------------------------------------ place
    def _joined_leaf(self, vector: np.ndarray, k: int = 10) -> int | None:
        """The insight a new statement joins: the similarity-weighted majority of its k nearest population
        statements, provided it lies within that insight's reach (no farther from the centroid than the insight's
        farthest member)."""
        if not self.leaf_members_:
            return None
        similarities = self.embeddings_ @ vector
        nearest = np.argsort(-similarities)[: min(k, len(similarities))]
        votes: dict[int, float] = {}
        for index in nearest:
            leaf = int(self.core_leaves_[index])
            votes[leaf] = votes.get(leaf, 0.0) + max(float(similarities[index]), 0.0)
        winner = max(votes, key=lambda label: votes[label])
        if winner < 0 or votes[winner] < 0.5 * sum(votes.values()):
            return None
        if float(self.leaf_centroids_[winner] @ vector) < self.leaf_reach_[winner]:
            return None
        return winner

    def place(self, persona_text: str, max_insights: int = 5) -> Placement:
        """Place a new persona on the fitted map: its statements, nearest insights and typicality."""
        if not hasattr(self, "result_"):
            raise RuntimeError("call fit() before place()")
        texts = self.splitter_.split(persona_text)
        if not texts:
            raise ValueError("the persona has no trait statements (write at least one sentence of 3+ words)")
        vectors = self._embed_cores([trait_core(text) for text in texts])
        positions = interpolate_positions(self.embeddings_, self.core_positions_, vectors)
        leaves = self.result_.leaves
        placed: list[PlacedStatement] = []
        shares: list[float] = []
        best_per_insight: dict[int, float] = {}
        for text, vector, position in zip(texts, vectors, positions, strict=True):
            leaf = self._joined_leaf(vector)
            similarities = self.leaf_centroids_ @ vector
            for index, similarity in enumerate(similarities):
                best_per_insight[index] = max(best_per_insight.get(index, -1.0), float(similarity))
            placed.append(
                PlacedStatement(
                    text=text,
                    x=float(position[0]),
                    y=float(position[1]),
                    insight_id=leaves[leaf].id if leaf is not None else None,
                    similarity=float(similarities[leaf]) if leaf is not None else float(similarities.max(initial=0.0)),
                )
            )
            shares.append(float(self.leaf_shares_[leaf]) if leaf is not None else 0.0)
        ranked = sorted(best_per_insight.items(), key=lambda item: -item[1])[:max_insights]
        nearest_insights = tuple(
            NearbyInsight(
                insight_id=leaves[leaf].id,
                name=leaves[leaf].name,
                similarity=similarity,
                share_of_users=float(self.leaf_shares_[leaf]),
            )
            for leaf, similarity in ranked
        )
        typicality = float(np.mean(shares))
        percentile = 100.0 * float(np.mean(self.user_typicality_ < typicality))
        return Placement(tuple(placed), nearest_insights, typicality, percentile)


MIN_FILLER_CLUSTERS = 3  # a word in fewer clusters is not spread, whatever their share (a population of few traits)
MAX_MEMBERS_TO_NAME = 200  # a name comes from the most central members; the rest add time, not words


def _first_distinct(texts: Iterable[str], limit: int) -> list[str]:
    chosen: dict[str, None] = {}
    for text in texts:
        chosen.setdefault(text)
        if len(chosen) == limit:
            break
    return list(chosen)


class _StageClock:
    """Wall time per pipeline stage, reported in `params["seconds"]`."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self._last, 3)
        self._last = now


def _visible_clusters(labels: np.ndarray, users: np.ndarray, min_users: int) -> tuple[list[np.ndarray], int]:
    """Statement indices of clusters with at least `min_users` unique users (largest first), and how many
    non-noise clusters fell under that floor."""
    clustered = np.flatnonzero(labels >= 0)
    if len(clustered) == 0:
        return [], 0
    cluster_ids, local = np.unique(labels[clustered], return_inverse=True)
    n_user_ids = int(users.max()) + 1
    user_pairs = np.unique(local.astype(np.int64) * n_user_ids + users[clustered])
    n_users = np.bincount(user_pairs // n_user_ids, minlength=len(cluster_ids))
    order = np.argsort(local, kind="stable")
    members_of = np.split(clustered[order], np.cumsum(np.bincount(local, minlength=len(cluster_ids)))[:-1])
    shown = sorted(np.flatnonzero(n_users >= min_users), key=lambda i: (-n_users[i], int(members_of[i][0])))
    return [members_of[i] for i in shown], len(cluster_ids) - len(shown)


def _group_labels(groups: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Each index's group (groups are disjoint), -1 for none."""
    labels = np.full(n, -1, dtype=np.int64)
    for group, members in enumerate(groups):
        labels[members] = group
    return labels


def _best_jaccards(reference: np.ndarray, candidate: np.ndarray, kept: np.ndarray, n_references: int) -> np.ndarray:
    """For each reference group, the best Jaccard, over candidate groups it overlaps, between its kept members
    and the candidate's members (candidates hold kept indices only)."""
    best = np.zeros(n_references)
    if n_references == 0 or candidate.max(initial=-1) < 0:
        return best
    reference_kept = reference[kept]
    reference_sizes = np.bincount(reference_kept[reference_kept >= 0], minlength=n_references)
    candidate_sizes = np.bincount(candidate[candidate >= 0])
    both = (reference >= 0) & (candidate >= 0)
    overlap = sparse.coo_matrix(
        (np.ones(int(both.sum())), (reference[both], candidate[both])),
        shape=(n_references, len(candidate_sizes)),
    ).tocsr()
    overlap.sum_duplicates()
    for row in range(n_references):
        start, end = overlap.indptr[row], overlap.indptr[row + 1]
        if start == end:
            continue
        shared = overlap.data[start:end]
        unions = reference_sizes[row] + candidate_sizes[overlap.indices[start:end]] - shared
        best[row] = float(np.max(shared / unions))
    return best


def _themes(centroids: np.ndarray, leaf_users: Sequence[set[int]], max_users: float) -> list[list[int]]:
    """Groups of leaf indices: average-linkage (cosine) of centroids cut into round(sqrt(n)) groups, and a group
    whose leaves hold more than `max_users` users split into the two subtrees it joined, again until none does;
    groups of one leaf are not themes. (Average linkage is monotone, so each group of the cut is a subtree.)"""
    n = len(centroids)
    if n < 4:
        return []
    tree = linkage(centroids, method="average", metric="cosine")
    labels = fcluster(tree, t=max(2, round(math.sqrt(n))), criterion="maxclust")
    groups, pending = [], [to_tree(tree)]
    while pending:  # top-down: a node is a theme when it lies within one group of the cut and is not too large
        node = pending.pop()
        if node.is_leaf():
            continue
        leaves = node.pre_order()
        if len(set(labels[leaves])) > 1 or len(set().union(*(leaf_users[i] for i in leaves))) > max_users:
            pending += [node.get_left(), node.get_right()]
        else:
            groups.append(sorted(leaves))
    return sorted(groups, key=lambda group: group[0])


def _wording(core: str) -> str:
    """A core as a wording: lowercased, punctuation dropped, spaces collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", core.lower()).split())


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _jitter(positions: np.ndarray, seed: int) -> np.ndarray:
    """Spread identical statements slightly so the map shows how many there are (1% of the map's extent)."""
    if len(positions) == 0:
        return positions
    extent = np.ptp(positions, axis=0)
    rng = np.random.default_rng(seed)
    return positions + rng.normal(scale=0.01 * np.maximum(extent, 1e-9), size=positions.shape)
