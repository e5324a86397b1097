"""Swappable parts of the pipeline (BERTopic style): reducers, clusterers and 2-D projectors.

Each part is a small class with one method:
- reducer:   `reduce(vectors) -> vectors` (fewer dimensions before clustering),
- clusterer: `cluster(vectors, seed) -> labels` (-1 marks noise),
- projector: `project(vectors, seed) -> (n, 2) coordinates` for the map.

All of them receive the *distinct* trait statements' unit-length embeddings.

How the default clusterer was chosen (generated population, 1,000 users, seed 1, 26 planted traits; traits
recovered = Jaccard of user sets >= 0.5; ARI against each user's dominant trait):

| clusterer (on distinct statements)                | recovered | ARI  | number of clusters |
|---------------------------------------------------|-----------|------|--------------------|
| k-means, k = 30 (k given), raw sentences           | 15 / 26   | 0.26 | given              |
| k-means, k = 30 (k given), subject removed         | 19 / 26   | 0.42 | given              |
| Ward linkage, 30 clusters (k given)                 | 21 / 26   | 0.46 | given              |
| HDBSCAN, min size 10, 20-d PCA (all statements)     | 0 / 26    | 0.04 | 204 tiny groups    |
| Louvain on a 10-nearest-neighbour graph             | 21 / 26   | 0.51 | from data, but 4-21 / 26 across k and sizes |
| Louvain on a shared-nearest-neighbour graph (k=15)  | 22 / 26   | 0.54 | from data          |

The last one (PhenoGraph style) was the most consistent across 300, 1,000 and 3,000 users and needs no k, so it is
the default; the others stay available as parts.
"""

from __future__ import annotations

from typing import Protocol

import networkx as nx
import numpy as np
from scipy import sparse
from sklearn.cluster import HDBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE


class Reducer(Protocol):
    def reduce(self, vectors: np.ndarray) -> np.ndarray: ...


class Clusterer(Protocol):
    def cluster(self, vectors: np.ndarray, seed: int) -> np.ndarray: ...


class Projector(Protocol):
    def project(self, vectors: np.ndarray, seed: int) -> np.ndarray: ...


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def nearest_neighbors(
    vectors: np.ndarray, k: int, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine k-nearest neighbours (excluding self) of unit rows, computed in chunks to bound memory."""
    n = len(vectors)
    k = min(k, n - 1)
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
        similarities[start : start + chunk] = np.take_along_axis(
            top_similarities, order, axis=1
        )
    return indices, similarities


class PCAReducer:
    """Linear reduction; cheap, and keeps cosine geometry close for the top components."""

    def __init__(self, n_components: int = 50) -> None:
        self.n_components = n_components

    def reduce(self, vectors: np.ndarray) -> np.ndarray:
        n_components = min(self.n_components, vectors.shape[0], vectors.shape[1])
        return _unit_rows(
            PCA(n_components=n_components, random_state=0).fit_transform(vectors)
        )


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


class HDBSCANClusterer:
    """Density clustering (BERTopic's default clusterer); marks sparse statements as noise (-1)."""

    def __init__(self, min_cluster_size: int = 10) -> None:
        self.min_cluster_size = min_cluster_size

    def cluster(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        del seed  # HDBSCAN is deterministic
        return (
            HDBSCAN(min_cluster_size=self.min_cluster_size, copy=True)
            .fit_predict(vectors)
            .astype(np.int64)
        )


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
    weights = (
        np.clip(np.take_along_axis(similarities, nearest, axis=1), 1e-6, None) ** 4
    )
    weights /= weights.sum(axis=1, keepdims=True)
    return np.einsum("nk,nkd->nd", weights, anchor_positions[nearest])


class AnchoredTSNEProjector:
    """Map layout: k-means anchors laid out by exact t-SNE, statements placed between their nearest anchors.

    Full t-SNE (scikit-learn, and openTSNE) took 30-70 s for 640 statements on this shared 2-core machine, so
    only `sqrt(n)` anchors (at most `max_anchors`) go through t-SNE; every statement is then placed at the
    similarity-weighted mean of its nearest anchors, the same rule that places a new persona's statements later.
    Distances between regions are meaningful; positions inside a region show which neighbours a statement leans to.
    """

    def __init__(self, max_anchors: int = 60, perplexity: float = 15.0) -> None:
        self.max_anchors = max_anchors
        self.perplexity = perplexity

    def project(self, vectors: np.ndarray, seed: int) -> np.ndarray:
        n = len(vectors)
        n_anchors = int(np.clip(round(np.sqrt(n)), 1, self.max_anchors))
        if n < 8 or n_anchors < 5:
            return PCAProjector().project(vectors, seed)
        kmeans = KMeans(n_clusters=n_anchors, random_state=seed, n_init=1).fit(vectors)
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
