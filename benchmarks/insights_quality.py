"""Planted facets recovered by population insights, on every population generator, beside a simple baseline.

    HF_HUB_OFFLINE=1 python benchmarks/insights_quality.py [--populations catalog:300 markdown:120 ...] [--seeds 0]

Generators (`synth.insights.generators.GENERATORS`): `catalog` (the one the defaults were chosen on), and two
held-out ones written with other wording and formats: `markdown` (LLM-style `**Label**: text` lists with shared
filler lines and a closing summary) and `fused` (plain prose, facets paraphrased and often fused into one
sentence). A planted facet is recovered when a shown insight's users have Jaccard >= 0.5 with the facet's users.

Rows: the pipeline's default (words found in at least a tenth of a first pass's clusters left out of the
embeddings' pooling as filler; complete-linkage clusters of the embeddings less their mean, every two members at
cosine distance <= 1.0, then clusters whose members have a mean cosine >= 0.25 joined by average linkage; a wording
that at least a fifth of personas share is an insight of its own), the default without filler words (the previous
default), at other filler shares, and without the common-wording rule, the other clusterer and reduction variants
measured (BERTopic's UMAP 5-d + HDBSCAN, the default two rounds ago, with clusters of the same distinctive words
joined; every variant is the default with the one change its name says), and the baseline
the issue describes (split on lines, list items and sentences, strip markdown, drop fragments under 3 words,
all-MiniLM-L6-v2, k-means with k chosen by silhouette over 10..38, privacy floor 5). Embeddings are cached in a
folder shared by all rows (`--cache-dir`, default a temporary one).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synth.insights import CachedEmbedder, PopulationInsights, SentenceTransformerEmbedder
from synth.insights.generators import GENERATORS
from synth.insights.parts import (
    CompleteLinkageClusterer,
    HDBSCANClusterer,
    PCAReducer,
    SharedNeighborLouvain,
    UMAPReducer,
)
from synth.insights.recovery import RECOVERED
from synth.insights.synthetic import SyntheticPopulation

MIN_USERS = 5


def pipeline_variants() -> dict[str, Callable[[], dict]]:
    """Name -> the PopulationInsights parts of that variant (the first is the default)."""
    return {
        "default: filler words (in >= 10% of a first pass's clusters) left out of the pooling, complete linkage of "
        "centred embeddings (distance <= 1.0), then clusters alike on average joined (mean cosine >= 0.25), common "
        "wordings apart": dict,
        "default without filler words (previous default)": lambda: {"filler_share": None},
        "filler words in >= 5% of the first pass's clusters": lambda: {"filler_share": 0.05},
        "filler words in >= 20% of the first pass's clusters": lambda: {"filler_share": 0.2},
        "default without the common-wording rule": lambda: {"common_share": None},
        "default without joining clusters alike on average": lambda: {
            "clusterer": CompleteLinkageClusterer(join_similarity=None)},
        "joining clusters alike on average at mean cosine >= 0.20": lambda: {
            "clusterer": CompleteLinkageClusterer(join_similarity=0.20)},
        "joining clusters alike on average at mean cosine >= 0.30": lambda: {
            "clusterer": CompleteLinkageClusterer(join_similarity=0.30)},
        "complete linkage, centred, distance <= 0.95, joined at 0.25": lambda: {
            "clusterer": CompleteLinkageClusterer(0.95)},
        "complete linkage, centred, distance <= 1.05, joined at 0.25": lambda: {
            "clusterer": CompleteLinkageClusterer(1.05)},
        "complete linkage, not centred, distance <= 0.85, not joined": lambda: {
            "clusterer": CompleteLinkageClusterer(0.85, join_similarity=None, center=False)},
        "default with same-vocabulary joining (0.16)": lambda: {"merge_similarity": 0.16},
        "UMAP 5-d + HDBSCAN leaf (>= 1%), same-vocabulary joined (default two rounds ago)": lambda: {
            "reducer": UMAPReducer(), "clusterer": HDBSCANClusterer(), "merge_similarity": 0.16},
        "UMAP 5-d + HDBSCAN leaf (>= 1%)": lambda: {"reducer": UMAPReducer(), "clusterer": HDBSCANClusterer()},
        "UMAP 5-d + HDBSCAN excess of mass (>= 1%)": lambda: {
            "reducer": UMAPReducer(), "clusterer": HDBSCANClusterer(selection="eom")},
        "PCA 10-d + HDBSCAN leaf (>= 1%)": lambda: {"reducer": PCAReducer(10), "clusterer": HDBSCANClusterer()},
        "shared-neighbour Louvain": lambda: {"clusterer": SharedNeighborLouvain()},
    }


def recovered(population: SyntheticPopulation, user_sets: list[set[str]]) -> dict[str, float]:
    """Best Jaccard of each planted facet's users with any shown group's users."""
    best = {}
    for facet in population.planted:
        truth = population.users_with_trait(facet.key)
        best[facet.key] = max((len(truth & users) / len(truth | users) for users in user_sets), default=0.0)
    return best


def baseline_statements(text: str) -> list[str]:
    """Lines, list items and sentences, markdown stripped, fragments under 3 words dropped."""
    statements = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+", "", line)
        line = re.sub(r"[#*_`>]+", "", line).strip()
        statements += [s for s in re.split(r"(?<=[.!?])\s+", line) if len(s.split()) >= 3]
    return statements


def baseline(population: SyntheticPopulation, embedder: CachedEmbedder, seed: int) -> tuple[list[set[str]], int]:
    """k-means on statement embeddings, k by silhouette over 10..38; groups of at least 5 users are shown."""
    statements, owners = [], []
    for user in population.users:
        for statement in baseline_statements(user.persona.text):
            statements.append(statement)
            owners.append(user.persona.user_id)
    distinct = list(dict.fromkeys(statements))
    vectors = embedder.embed(distinct)
    best_score, best_k, best_labels = -2.0, 0, np.zeros(len(distinct), dtype=np.int64)
    for k in range(10, min(38, len(distinct) - 1) + 1):
        labels = KMeans(n_clusters=k, random_state=seed, n_init=1).fit_predict(vectors)
        score = silhouette_score(vectors, labels, metric="cosine")
        if score > best_score:
            best_score, best_k, best_labels = score, k, labels
    index = {text: i for i, text in enumerate(distinct)}
    groups: dict[int, set[str]] = {}
    for statement, owner in zip(statements, owners, strict=True):
        groups.setdefault(int(best_labels[index[statement]]), set()).add(owner)
    return [users for users in groups.values() if len(users) >= MIN_USERS], best_k


def describe(population: SyntheticPopulation, best: dict[str, float], user_sets: list[set[str]]) -> str:
    kinds = {facet.key: facet.kind for facet in population.planted}
    hits = [key for key, score in best.items() if score >= RECOVERED]
    life = [key for key in kinds if kinds[key] in ("topics", "situation")]
    largest = max((len(users) for users in user_sets), default=0) / len(population.users)
    return (
        f"{len(hits)}/{len(best)} ({100 * len(hits) / len(best):.0f}%) | "
        f"{sum(key in hits for key in life)}/{len(life)} | {len(user_sets)} | {100 * largest:.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--populations", nargs="+",
                        default=["catalog:300", "catalog:1000", "markdown:120", "markdown:600", "fused:120",
                                 "fused:600"],
                        help="generator:users pairs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="*", help="only these variant names (default: all)")
    parser.add_argument("--cache-dir", help="embedding cache folder kept between runs (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    variants = pipeline_variants()
    chosen = args.variants or list(variants)
    print(f"CPU: {_cpu_name()}, {os.cpu_count()} cores; load average at start {os.getloadavg()[0]:.1f}")
    print("| population | users | seed | method | facets recovered | topic + life facets | insights shown |"
          " largest insight (users) | fit |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as temporary:
        embedder = CachedEmbedder(SentenceTransformerEmbedder(), args.cache_dir or temporary)
        for spec in args.populations:
            name, size = spec.split(":")
            for seed in args.seeds:
                population = GENERATORS[name](int(size), seed)
                for variant in chosen:
                    start = time.perf_counter()
                    result = PopulationInsights(embedder=embedder, n_resamples=0, seed=seed, min_users=MIN_USERS,
                                                **variants[variant]()).fit(population.personas)
                    seconds = time.perf_counter() - start
                    user_sets = [set(leaf.user_ids) for leaf in result.leaves]
                    print(f"| {name} | {size} | {seed} | {variant} | "
                          f"{describe(population, recovered(population, user_sets), user_sets)} | {seconds:.1f} s |",
                          flush=True)
                start = time.perf_counter()
                user_sets, k = baseline(population, embedder, seed)
                seconds = time.perf_counter() - start
                print(f"| {name} | {size} | {seed} | baseline (k-means, k = {k} by silhouette) | "
                      f"{describe(population, recovered(population, user_sets), user_sets)} | {seconds:.1f} s |",
                      flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
                return line.split(":", 1)[1].strip() + (" (AMX)" if "amx_bf16" in flags else "")
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
