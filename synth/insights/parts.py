"""Swappable parts of the pipeline (BERTopic style): reducers, clusterers and 2-D projectors.

Each part is a small class with one method:
- reducer:   `reduce(vectors) -> vectors` (fewer dimensions before clustering),
- clusterer: `cluster(vectors, seed) -> labels` (-1 marks noise),
- projector: `project(vectors, seed) -> (n, 2) coordinates` for the map.

All of them receive the *distinct* trait statements' vectors (unit-length embeddings, or their reduction).
The default clusterer is `CompleteLinkageClusterer` on the embeddings as they are; BERTopic's pair, `UMAPReducer`
(5-d) then `HDBSCANClusterer`, was the default before it; docs/insights.md has the measurements behind the choice
on every population generator. Past `max_points`, each part fits on a seeded sample and places the other
statements from their nearest sampled neighbours (an exact search, since the sample is bounded), so their cost
stops growing with the data.
"""

from __future__ import annotations

import math
from typing import Protocol

import networkx as nx
import numpy as np
from scipy import sparse
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE


class Reducer(Protocol):
    def reduce(self, vectors: np.ndarray) -> np.ndarray: ...


class Clusterer(Protocol):
    def cluster(self, vectors: np.ndarray, seed: int) -> np.ndarray: ...


class Projector(Protocol):
    def project(self, vectors: np.ndarray, seed: int) -> np.ndarray: ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    return vectors / np.maximum(norms, 1e-12)[:, None]


EXACT_NEIGHBORS_LIMIT = 20_000  # beyond this many rows, the k-NN graph comes from pynndescent's approximate index
FIT_SAMPLE = 5_000  # rows the reducer, clusterer and projector fit on; clusters hold >= 1%, so dozens of these each


def nearest_neighbors(
    vectors: np.ndarray, k: int, chunk: int = 2048, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine k-nearest neighbours (excluding self) of unit rows: exact in chunks up to `EXACT_NEIGHBORS_LIMIT`
    rows, approximate (pynndescent) beyond."""
    n = len(vectors)
    k = min(k, n - 1)
    if n > EXACT_NEIGHBORS_LIMIT:
        from pynndescent import NNDescent

        index = NNDescent(vectors, metric="cosine", n_neighbors=max(k + 1, 15), random_state=seed, n_jobs=-1)
        indices, distances = index.neighbor_graph
        return indices[:, 1 : k + 1].astype(np.int64), (1.0 - distances[:, 1 : k + 1]).astype(np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    similarities = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, chunk):
        block = vectors[start : start + chunk] @ vectors.T
        rows = np.arange(len(block))
        block[rows, rows + start] = -np.inf
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_similarities = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_similarities, axis=1)
        indices[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        similarities[start : start + chunk] = np.take_along_axis(top_similarities, order, axis=1)
    return indices, similarities


def nearest_in(
    queries: np.ndarray, references: np.ndarray, k: int, chunk: int = 8192, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-nearest `references` rows of each query row (unit rows), in chunks of queries; `rows`: only
    these rows of `queries` (instead of a copy of them).

    The references are a bounded sample (at most `FIT_SAMPLE` rows), so an exact search fits at any number of
    queries; it runs in torch, in bfloat16 on CPUs that multiply it natively (AMX, AVX512-BF16), where it is several
    times faster than float32; the order among neighbours closer than bfloat16's resolution (cosines within ~0.004)
    is then arbitrary, which a weighted mean of their positions does not notice.
    """
    import torch

    from synth.lm.loading import cpu_has_native_bf16

    k = min(k, len(references))
    dtype = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    reference_matrix = torch.from_numpy(np.ascontiguousarray(references, dtype=np.float32)).to(dtype).T
    rows = np.arange(len(queries)) if rows is None else rows
    indices = np.empty((len(rows), k), dtype=np.int64)
    similarities = np.empty((len(rows), k), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(rows), chunk):
            block = torch.from_numpy(np.ascontiguousarray(queries[rows[start : start + chunk]], dtype=np.float32))
            top = torch.topk((block.to(dtype) @ reference_matrix).float(), k, dim=1)
            indices[start : start + chunk] = top.indices.numpy()
            similarities[start : start + chunk] = top.values.numpy()
    return indices, similarities


def seeded_sample(n: int, size: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded sample of `size` rows (all rows when there are no more than that)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


class PCAReducer:
    """Linear reduction; cheap, and keeps cosine geometry close for the top components."""

    def __init__(self, n_components: int = 50) -> None:
        self.n_components = n_components

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        n_components = min(self.n_components, vectors.shape[0], vectors.shape[1])
        return _unit_rows(
            PCA(n_components=n_components, random_state=0).fit_transform(vectors)
        )


class UMAPReducer:
    """UMAP to `n_components` dimensions on the cosine k-NN graph (BERTopic's reducer; `min_dist=0` packs
    clusters tightly, which is what a density clusterer needs).

    The k-NN graph is computed here (`nearest_neighbors`: exact matrix products up to `EXACT_NEIGHBORS_LIMIT` rows)
    and handed to UMAP, so UMAP neither builds nor JIT-compiles its own approximate index. UMAP is fitted on at most
    `max_fit_points` rows (a seeded sample: clusters are defined by their share of the statements, so a sample of a
    few thousand shows the same clusters as the whole population); every other row is placed at the
    similarity-weighted mean of its 10 nearest sampled rows, the same rule that places a new persona on the map.
    """

    def __init__(
        self, n_components: int = 5, n_neighbors: int = 15, min_dist: float = 0.0, max_fit_points: int = FIT_SAMPLE,
        seed: int = 0,
    ) -> None:
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.max_fit_points = max_fit_points
        self.seed = seed

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        n = len(vectors)
        if n <= self.n_components + 2:
            return vectors
        import warnings

        from umap import UMAP

        fitted = seeded_sample(n, self.max_fit_points, self.seed)
        fitted_vectors = _unit_rows(vectors[fitted])
        n_neighbors = min(self.n_neighbors, len(fitted) - 1)
        indices, similarities = nearest_neighbors(fitted_vectors, n_neighbors - 1, seed=self.seed)
        # UMAP's precomputed graph lists each row itself first, at distance 0.
        knn_indices = np.concatenate([np.arange(len(fitted))[:, None], indices], axis=1)
        knn_distances = np.concatenate(
            [np.zeros((len(fitted), 1), dtype=np.float32), np.clip(1.0 - similarities, 0.0, None)], axis=1
        )
        model = UMAP(
            n_components=self.n_components,
            n_neighbors=n_neighbors,
            min_dist=self.min_dist,
            metric="cosine",
            random_state=self.seed,
            precomputed_knn=(knn_indices, knn_distances, None),
        )
        with warnings.catch_warnings():  # seeded runs are single-threaded; no search index (UMAP.transform unused)
            warnings.simplefilter("ignore", UserWarning)
            reduced_fitted = model.fit_transform(fitted_vectors).astype(np.float32)
        if len(fitted) == n:
            return reduced_fitted
        reduced = np.empty((n, self.n_components), dtype=np.float32)
        reduced[fitted] = reduced_fitted
        rest = np.setdiff1d(np.arange(n), fitted)
        # A query's length scales its similarities alike, which the normalised weights cancel: no unit copy needed.
        neighbours, similarities = nearest_in(vectors, fitted_vectors, k=10, rows=rest)
        reduced[rest] = similarity_weighted_mean(similarities, reduced_fitted[neighbours])
        return reduced


class SharedNeighborLouvain:
    """Louvain communities on a shared-nearest-neighbour graph; the number of clusters comes from the data.

    Each statement links to its `n_neighbors` nearest statements, weighted by the Jaccard overlap of the two
    neighbour lists, which keeps tight groups of near-identical wording from splitting a trait. `n_neighbors=None`
    scales with the data (0.4 * sqrt(n), between 10 and 30); `resolution` above 1 gives more, smaller clusters.
    Both defaults were picked on generated populations of 300 and 1,000 users (resolution 0.8 / 1.0 / 1.3 / 1.6
    recovered 14-15 / 15-17 / 19 / 19-20 of 26 planted traits at 300 users and 18-19 / 19-20 / 20-21 / 22-23 at
    1,000; 1.3 kept the best dominant-trait ARI across both sizes).
    """

    def __init__(self, n_neighbors: int | None = None, resolution: float = 1.3) -> None:
        self.n_neighbors = n_neighbors
        self.resolution = resolution

    def neighbors_for(self, n_points: int) -> int:
        if self.n_neighbors is not None:
            return self.n_neighbors
        return int(np.clip(round(0.4 * np.sqrt(n_points)), 10, 30))

    def cluster(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        n = len(vectors)
        if n < 3:
            return np.zeros(n, dtype=np.int64)
        k = min(self.neighbors_for(n), n - 1)
        indices, _ = nearest_neighbors(_unit_rows(vectors), k)
        rows = np.repeat(np.arange(n), k + 1)
        columns = np.concatenate([np.arange(n)[:, None], indices], axis=1).ravel()
        membership = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, columns)), shape=(n, n)
        )
        adjacency = ((membership + membership.T) > 0).astype(np.float32)
        adjacency.setdiag(0)
        shared = membership @ membership.T
        shared = shared.multiply(adjacency).tocsr()
        shared.data = shared.data / (2 * (k + 1) - shared.data)
        shared.eliminate_zeros()
        graph = nx.from_scipy_sparse_array(shared)
        communities = nx.community.louvain_communities(
            graph, weight="weight", resolution=self.resolution, seed=seed
        )
        labels = np.empty(n, dtype=np.int64)
        for label, members in enumerate(
            sorted(communities, key=lambda c: (-len(c), min(c)))
        ):
            labels[list(members)] = label
        return labels


class KMeansClusterer:
    """k-means with a fixed number of clusters (a baseline; the caller chooses k)."""

    def __init__(self, n_clusters: int = 30) -> None:
        self.n_clusters = n_clusters

    def cluster(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        n_clusters = min(self.n_clusters, len(vectors))
        return (
            KMeans(n_clusters=n_clusters, random_state=seed, n_init=1)
            .fit_predict(vectors)
            .astype(np.int64)
        )


class CompleteLinkageClusterer:
    """Complete-linkage clusters of the statements less their mean, then clusters whose members are alike on
    average joined (average linkage over the complete-linkage clusters).

    Sentence embeddings share a large common direction (every persona statement is about a person and an assistant),
    so raw cosines are all positive and say more about shared boilerplate than about traits. With the population's
    mean statement subtracted (`center`), a cosine of 0 means "no more alike than two statements of this population
    at random". Complete linkage at `max_distance=1.0` makes groups in which every two statements are at least that
    alike, so no insight spans unrelated statements. A trait written in many wordings (five labels times five
    explanations, say) can have a pair below chance and split there; so groups then join, most alike first, while the
    mean cosine between their members is at least `join_similarity` (None: no joining). Both values were chosen on
    the tuning generator (docs/insights.md). The granularity is a similarity, not a number of clusters or a minimum
    cluster size, so it does not change with the population's size (a density clusterer's minimum size differs
    between a trait written in five paraphrases and one written in fifty templates). Small clusters are not noise
    here: the pipeline's privacy floor hides those with too few users. Beyond `max_points` rows, the clusters are
    found on a seeded sample and every other row takes the cluster of its nearest sampled row when within
    `max_distance` of it (noise otherwise).
    """

    def __init__(
        self, max_distance: float = 1.0, join_similarity: float | None = 0.25, center: bool = True,
        max_points: int = FIT_SAMPLE,
    ) -> None:
        self.max_distance = max_distance
        self.join_similarity = join_similarity
        self.center = center
        self.max_points = max_points

    def cluster(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        if not 0 < self.max_distance < 2:
            raise ValueError("max_distance must be in (0, 2)")
        if self.join_similarity is not None and not -1 <= self.join_similarity <= 1:
            raise ValueError("join_similarity must be in [-1, 1] or None")
        n = len(vectors)
        if n < 2:
            return np.zeros(n, dtype=np.int64)
        sample = seeded_sample(n, self.max_points, seed)
        sampled_units = _unit_rows(vectors[sample])
        mean = sampled_units.mean(axis=0) if self.center else np.zeros(vectors.shape[1], np.float32)
        sampled_vectors = _unit_rows(sampled_units - mean)
        tree = linkage(pdist(sampled_vectors.astype(np.float64), "cosine"), method="complete")
        sampled_labels = fcluster(tree, self.max_distance, criterion="distance").astype(np.int64) - 1
        if self.join_similarity is not None:
            sampled_labels = _join_alike_on_average(sampled_vectors, sampled_labels, self.join_similarity)
        if len(sample) == n:
            return sampled_labels
        labels = np.full(n, -1, dtype=np.int64)
        labels[sample] = sampled_labels
        rest = np.setdiff1d(np.arange(n), sample)
        for chunk in np.array_split(rest, max(1, math.ceil(len(rest) / 65_536))):
            nearest, similarity = nearest_in(_unit_rows(_unit_rows(vectors[chunk]) - mean), sampled_vectors, k=1)
            within = similarity[:, 0] >= 1.0 - self.max_distance
            labels[chunk[within]] = sampled_labels[nearest[within, 0]]
        return labels


def _join_alike_on_average(unit_vectors: np.ndarray, labels: np.ndarray, min_similarity: float) -> np.ndarray:
    """Average linkage over the clusters of `labels` (0..k-1): the two clusters whose members have the highest mean
    cosine join, and again, while that mean is at least `min_similarity`; returns labels 0..j-1."""
    n_clusters = int(labels.max()) + 1
    sizes = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    sums = np.zeros((n_clusters, unit_vectors.shape[1]))
    np.add.at(sums, labels, unit_vectors)
    # similarity[a, b]: mean cosine over the pairs of members of a and b (the dot product of their mean vectors).
    means = sums / sizes[:, None]
    similarity = means @ means.T
    np.fill_diagonal(similarity, -np.inf)
    parent = np.arange(n_clusters)
    for _ in range(n_clusters - 1):
        a, b = np.unravel_index(np.argmax(similarity), similarity.shape)
        if similarity[a, b] < min_similarity:
            break
        # Lance-Williams update for average linkage: the joined cluster's mean similarity to every other cluster.
        joined = (sizes[a] * similarity[a] + sizes[b] * similarity[b]) / (sizes[a] + sizes[b])
        similarity[a], similarity[:, a] = joined, joined
        similarity[a, a] = -np.inf
        similarity[b], similarity[:, b] = -np.inf, -np.inf
        sizes[a] += sizes[b]
        parent[parent == b] = a
    return np.unique(parent, return_inverse=True)[1][labels].astype(np.int64)


class HDBSCANClusterer:
    """HDBSCAN (the `hdbscan` package) with leaf selection: the finest clusters of its density hierarchy; the
    pipeline's themes are the broader level above them.

    A cluster holds at least `min_cluster_size` statements (default: the privacy floor's 5, since a smaller group
    can never be shown) and at least `min_cluster_share` of all statements, so leaves do not get finer as the
    population grows (with a fixed minimum, the leaves of 1,000 generated users were single wordings of a trait).
    Statements HDBSCAN leaves as noise join the nearest cluster when they lie within its reach (no farther from
    its centroid than its farthest member); the rest stay noise (rare, idiosyncratic statements). Beyond
    `max_points` rows, HDBSCAN runs on a seeded sample and the other rows join clusters by the same rule: a cluster
    of the minimum share still has dozens of sampled members, while HDBSCAN's cost grows with rows times
    `min_samples` (which defaults to the minimum cluster size, itself a share of the rows).
    """

    def __init__(
        self, min_cluster_size: int = 5, min_cluster_share: float = 0.01, min_samples: int | None = None,
        selection: str = "leaf", max_points: int = FIT_SAMPLE,
    ) -> None:
        self.min_cluster_size = min_cluster_size
        self.min_cluster_share = min_cluster_share
        self.min_samples = min_samples
        self.selection = selection
        self.max_points = max_points

    def cluster(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        import hdbscan

        n = len(vectors)
        labels = np.full(n, -1, dtype=np.int64)
        sample = seeded_sample(n, self.max_points, seed)
        min_size = max(self.min_cluster_size, math.ceil(self.min_cluster_share * len(sample)), 2)
        if len(sample) < min_size:
            return labels
        labels[sample] = hdbscan.HDBSCAN(
            min_cluster_size=min_size,
            min_samples=self.min_samples,
            cluster_selection_method=self.selection,
        ).fit_predict(np.ascontiguousarray(vectors[sample], dtype=np.float64))
        return _join_within_reach(vectors, labels)


def _join_within_reach(vectors: np.ndarray, labels: np.ndarray, chunk: int = 16_384) -> np.ndarray:
    """Give each unlabelled row the label of the nearest cluster centroid, when no farther from it than that
    cluster's farthest member."""
    n_clusters = int(labels.max()) + 1
    if n_clusters == 0:
        return labels
    vectors = vectors.astype(np.float64, copy=False)
    labelled = labels >= 0
    counts = np.bincount(labels[labelled], minlength=n_clusters).astype(np.float64)
    centroids = np.zeros((n_clusters, vectors.shape[1]))
    np.add.at(centroids, labels[labelled], vectors[labelled])
    centroids /= counts[:, None]
    reach = np.zeros(n_clusters)
    np.maximum.at(reach, labels[labelled], np.linalg.norm(vectors[labelled] - centroids[labels[labelled]], axis=1))
    centroid_norms = (centroids**2).sum(axis=1)
    joined = labels.copy()
    unlabelled = np.flatnonzero(~labelled)
    for start in range(0, len(unlabelled), chunk):
        rows = unlabelled[start : start + chunk]
        squared = (vectors[rows] ** 2).sum(axis=1)[:, None] + centroid_norms[None, :] - 2 * vectors[rows] @ centroids.T
        nearest = np.argmin(squared, axis=1)
        distance = np.sqrt(np.maximum(squared[np.arange(len(rows)), nearest], 0.0))
        inside = distance <= reach[nearest] + 1e-9
        joined[rows[inside]] = nearest[inside]
    return joined


def interpolate_positions(
    anchor_vectors: np.ndarray,
    anchor_positions: np.ndarray,
    vectors: np.ndarray,
    k: int = 8,
) -> np.ndarray:
    """Place vectors on an existing 2-D map at the similarity-weighted mean of their nearest anchors."""
    k = min(k, len(anchor_vectors))
    similarities = vectors @ anchor_vectors.T
    nearest = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
    return similarity_weighted_mean(np.take_along_axis(similarities, nearest, axis=1), anchor_positions[nearest])


def similarity_weighted_mean(similarities: np.ndarray, neighbour_positions: np.ndarray) -> np.ndarray:
    """Each row's neighbours' positions averaged with weights sharpened towards the most similar (similarity⁴)."""
    weights = np.clip(similarities, 1e-6, None) ** 4
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkd->nd", weights, neighbour_positions)


class AnchoredTSNEProjector:
    """Map layout: k-means anchors laid out by exact t-SNE, statements placed between their nearest anchors.

    Full t-SNE (scikit-learn, and openTSNE) took 30-70 s for 640 statements on this shared 2-core machine, so
    only `sqrt(n)` anchors (at most `max_anchors`) go through t-SNE; every statement is then placed at the
    similarity-weighted mean of its nearest anchors, the same rule that places a new persona's statements later.
    Distances between regions are meaningful; positions inside a region show which neighbours a statement leans to.
    """

    def __init__(self, max_anchors: int = 60, perplexity: float = 15.0, max_fitted: int = FIT_SAMPLE) -> None:
        self.max_anchors = max_anchors
        self.perplexity = perplexity
        self.max_fitted = max_fitted

    def project(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        n = len(vectors)
        n_anchors = int(np.clip(round(np.sqrt(n)), 1, self.max_anchors))
        if n < 8 or n_anchors < 5:
            return PCAProjector().project(vectors, seed)
        # Anchors are cluster centres, so a seeded sample finds them as well as the whole population does.
        kmeans = KMeans(n_clusters=n_anchors, random_state=seed, n_init=1).fit(
            vectors[seeded_sample(n, self.max_fitted, seed)]
        )
        anchors = _unit_rows(kmeans.cluster_centers_)
        layout = TSNE(
            n_components=2,
            method="exact",
            perplexity=min(self.perplexity, (n_anchors - 1) / 3),
            metric="cosine",
            init="pca",
            random_state=seed,
        ).fit_transform(anchors)
        return interpolate_positions(anchors, layout, _unit_rows(vectors), k=3)


class PCAProjector:
    """First two principal components: instant, but classes overlap more than with t-SNE."""

    def project(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        if len(vectors) < 2:
            return np.zeros((len(vectors), 2))
        return (
            PCA(n_components=2, random_state=seed)
            .fit_transform(vectors)
            .astype(np.float64)
        )
