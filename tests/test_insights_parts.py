"""synth.insights.parts: the complete-linkage and HDBSCAN clusterers, their sampling beyond max_points, and the UMAP
reducer."""

from __future__ import annotations

import numpy as np
import pytest

from synth.insights import PopulationInsights
from synth.insights.parts import (
    AnchoredTSNEProjector,
    CompleteLinkageClusterer,
    HDBSCANClusterer,
    UMAPReducer,
    nearest_in,
)
from tests.insights_doubles import TOPICS, TopicEmbedder, topic_personas


def _blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = np.eye(len(sizes), 8) * 10
    points = np.concatenate([center + rng.normal(scale=0.3, size=(size, 8)) for center, size in
                             zip(centers, sizes, strict=True)])
    return points, np.repeat(np.arange(len(sizes)), sizes)


def _same_partition(labels: np.ndarray, truth: np.ndarray) -> bool:
    """Each true group is one cluster of its own; only a few far points of a group may stay noise."""
    found = [set(labels[truth == t]) - {-1} for t in sorted(set(truth))]
    mostly_labelled = all(np.mean(labels[truth == t] >= 0) >= 0.9 for t in set(truth))
    return all(len(f) == 1 for f in found) and len(set.union(*found)) == len(found) and mostly_labelled


def test_hdbscan_finds_separated_groups_and_leaves_far_points_as_noise() -> None:
    points, truth = _blobs([30, 20, 12])
    outlier = np.full((1, 8), -25.0)
    labels = HDBSCANClusterer(min_cluster_share=0.0).cluster(np.vstack([points, outlier]), seed=0)
    assert _same_partition(labels[:-1], truth) and labels[-1] == -1
    # A group smaller than the minimum share of all statements is not a cluster of its own.
    share = HDBSCANClusterer(min_cluster_share=0.2).cluster(points, seed=0)
    assert len(set(share[truth == 2]) - {-1}) <= 1 and set(share[truth == 0]) != set(share[truth == 2])


def test_beyond_max_points_a_sample_is_clustered_and_the_rest_joins_it() -> None:
    points, truth = _blobs([300, 200, 150])
    sampled = HDBSCANClusterer(min_cluster_share=0.1, max_points=120).cluster(points, seed=3)
    assert _same_partition(sampled, truth)


def _unit(points: np.ndarray) -> np.ndarray:
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def test_complete_linkage_never_puts_two_statements_farther_apart_than_its_distance_in_one_cluster() -> None:
    rng = np.random.default_rng(0)
    points = _unit(rng.normal(size=(120, 8)) + 2.0)  # a common direction, as sentence embeddings have
    centred = _unit(points - points.mean(axis=0))
    for center, vectors in ((False, points), (True, centred)):
        for max_distance in (0.3, 0.85, 1.2):
            labels = CompleteLinkageClusterer(max_distance, join_similarity=None, center=center).cluster(points, seed=0)
            assert (labels >= 0).all()
            for label in set(labels):
                members = vectors[labels == label]
                assert 1.0 - (members @ members.T).min() <= max_distance + 1e-5
    # Looser distances give fewer, larger clusters; centring spreads the common direction's crowd apart.
    counts = [len(set(CompleteLinkageClusterer(d, join_similarity=None).cluster(points, seed=0)))
              for d in (0.3, 0.85, 1.2)]
    assert counts[0] > counts[1] > counts[2]
    raw = len(set(CompleteLinkageClusterer(0.3, join_similarity=None, center=False).cluster(points, seed=0)))
    assert raw < counts[0]
    with pytest.raises(ValueError, match="max_distance"):
        CompleteLinkageClusterer(2.5).cluster(points, seed=0)


def test_groups_alike_on_average_join_though_some_pair_is_farther_apart() -> None:
    """Two groups at cosine ~0.5 from each other (one trait in two wordings), a third unrelated: complete linkage at
    distance 0.3 keeps three groups; joining at a mean cosine of 0.4 makes the first two one, at 0.6 it does not."""
    rng = np.random.default_rng(0)
    u, v, w = np.eye(3, 8)
    v = 0.5 * u + np.sqrt(0.75) * v
    points = _unit(np.vstack([center + rng.normal(scale=0.02, size=(10, 8)) for center in (u, v, w)]))
    truth = np.repeat([0, 1, 2], 10)

    def groups(join_similarity: float | None) -> int:
        labels = CompleteLinkageClusterer(0.3, join_similarity=join_similarity, center=False).cluster(points, seed=0)
        assert all(len(set(labels[truth == t])) == 1 for t in range(3))
        return len(set(labels))

    assert groups(None) == 3 and groups(0.6) == 3 and groups(0.4) == 2
    with pytest.raises(ValueError, match="join_similarity"):
        CompleteLinkageClusterer(join_similarity=1.5).cluster(points, seed=0)


def test_complete_linkage_finds_separated_groups_and_places_rows_beyond_its_sample() -> None:
    points, truth = _blobs([300, 200, 150])
    points = _unit(points)
    assert _same_partition(CompleteLinkageClusterer().cluster(points, seed=0), truth)
    far = _unit(np.vstack([points, -np.ones((1, 8))]))
    sampled = CompleteLinkageClusterer(max_distance=0.5, max_points=120).cluster(far, seed=3)
    assert _same_partition(sampled[:-1], truth)
    assert sampled[-1] == -1  # the nearest sampled row is farther than the distance: noise, not a forced member


def test_default_clusterer_is_complete_linkage_on_the_embeddings_unless_parts_are_passed() -> None:
    class Unchanged:
        def reduce(self, vectors: np.ndarray) -> np.ndarray:
            return vectors

    default = PopulationInsights(embedder=TopicEmbedder(TOPICS), n_resamples=2, common_share=None)
    result = default.fit(topic_personas())
    assert result.params["clusterer"] == "CompleteLinkageClusterer" and default.reducer_ is None
    assert default.space_ is default.embeddings_
    names = [next(t for t in TOPICS if t in leaf.name.lower()) for leaf in result.leaves]
    assert sorted(names) == ["cook", "garden", "privacy"]  # chess has 3 users, under the floor of 5
    assert all(0.0 <= leaf.stability <= 1.0 for leaf in result.leaves)
    passed = PopulationInsights(embedder=TopicEmbedder(TOPICS), reducer=Unchanged(), clusterer=HDBSCANClusterer(),
                                n_resamples=0, common_share=None).fit(topic_personas())
    assert passed.params["clusterer"] == "HDBSCANClusterer" and passed.params["reducer"] == "Unchanged"


@pytest.mark.slow
def test_umap_reducer_places_points_beyond_its_fit_sample_near_their_group() -> None:
    points, truth = _blobs([150, 150], seed=1)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    reduced = UMAPReducer(n_components=2, max_fit_points=100).reduce(points)
    assert reduced.shape == (300, 2)
    labels = HDBSCANClusterer(min_cluster_share=0.2).cluster(reduced, seed=0)
    assert _same_partition(labels, truth)


def test_projector_fitted_on_a_sample_places_every_statement_and_keeps_groups_apart() -> None:
    points, truth = _blobs([120, 120, 120], seed=2)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    positions = AnchoredTSNEProjector(max_fitted=90).project(points, seed=0)
    assert positions.shape == (360, 2) and np.isfinite(positions).all()
    centres = np.stack([positions[truth == t].mean(axis=0) for t in range(3)])
    spread = max(float(np.linalg.norm(positions[truth == t] - centres[t], axis=1).mean()) for t in range(3))
    gaps = [float(np.linalg.norm(centres[a] - centres[b])) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 2 * spread


def test_nearest_in_finds_each_query_s_own_reference_first_across_chunks() -> None:
    rng = np.random.default_rng(4)
    references = rng.normal(size=(300, 16)).astype(np.float32)
    references /= np.linalg.norm(references, axis=1, keepdims=True)
    queries = references + rng.normal(scale=0.01, size=references.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    indices, similarities = nearest_in(queries, references, k=4, chunk=64)
    assert indices.shape == (300, 4) and (indices[:, 0] == np.arange(300)).all()
    assert (np.diff(similarities, axis=1) <= 1e-6).all() and (similarities[:, 0] > 0.98).all()
