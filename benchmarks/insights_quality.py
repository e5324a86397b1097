"""Quality and speed of population insights on generated populations with planted traits.

    HF_HUB_OFFLINE=1 python benchmarks/insights_quality.py [--sizes 300 1000 10000] [--seeds 0 1]

For each population size and seed: share of the 26 planted traits recovered as a shown insight (Jaccard of user
sets >= 0.5), ARI between each user's dominant planted trait and the insight holding most of the user's
statements, mean stability of the shown insights, number of insights, and wall time of `fit` with a cold
embedding cache (a fresh directory) and again with the cache warm. A baseline row embeds whole personas and runs
k-means with k = 26 (the number of planted traits, which a real analysis would not know). The last line measures
embedding throughput on distinct statements, since generated populations reuse wording and real ones do not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synth.insights import (
    CachedEmbedder,
    PopulationInsights,
    SentenceSplitter,
    SentenceTransformerEmbedder,
    trait_core,
)
from synth.insights.recovery import dominant_trait_ari, planted_trait_recovery, recovered_share
from synth.insights.synthetic import generate_population


def measure(
    size: int, seed: int, embedder: SentenceTransformerEmbedder, resamples: int
) -> dict[str, float]:
    population = generate_population(size, seed)
    with tempfile.TemporaryDirectory() as cache:
        cold_pipeline = PopulationInsights(
            embedder=CachedEmbedder(embedder, cache), n_resamples=resamples
        )
        start = time.perf_counter()
        result = cold_pipeline.fit(population.personas)
        cold = time.perf_counter() - start
        warm_pipeline = PopulationInsights(
            embedder=CachedEmbedder(embedder, cache), n_resamples=resamples
        )
        start = time.perf_counter()
        warm_result = warm_pipeline.fit(population.personas)
        warm = time.perf_counter() - start
    assert warm_result.to_json()["insights"] == result.to_json()["insights"], (
        "cached run must give the same result"
    )
    recovery = planted_trait_recovery(population, result)
    stabilities = [leaf.stability for leaf in result.leaves]
    return {
        "recovered": recovered_share(recovery),
        "ari": dominant_trait_ari(population, result),
        "stability": statistics.fmean(stabilities) if stabilities else float("nan"),
        "insights": len(result.leaves),
        "hidden": result.hidden_small_clusters,
        "statements": result.params["n_statements"],
        "unique": result.params["n_unique_statements"],
        "cold_s": cold,
        "embed_s": result.params["seconds"]["embed"],
        "warm_s": warm,
        "stages": warm_result.params["seconds"],
    }


def embedding_throughput(embedder: SentenceTransformerEmbedder, n: int = 1000) -> float:
    """Distinct statements embedded per second (made distinct by a numbered suffix, so no cache or dedup helps)."""
    splitter = SentenceSplitter()
    statements = [
        s
        for user in generate_population(400, seed=99).users
        for s in splitter.split(user.persona.text)
    ]
    texts = [
        f"{trait_core(statement)} (case {i})"
        for i, statement in enumerate(statements[:n])
    ]
    start = time.perf_counter()
    embedder.embed(texts)
    return len(texts) / (time.perf_counter() - start)


def whole_persona_baseline(
    size: int, seed: int, embedder: SentenceTransformerEmbedder
) -> float:
    population = generate_population(size, seed)
    vectors = embedder.embed([user.persona.text for user in population.users])
    labels = KMeans(
        n_clusters=len(population.catalog.traits), random_state=seed, n_init=1
    ).fit_predict(vectors)
    return float(
        adjusted_rand_score([user.dominant_trait for user in population.users], labels)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 10000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--resamples", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    embedder = SentenceTransformerEmbedder()
    embedder.embed(["warm up the model"])  # load time (~7 s) is not part of any row
    print(
        f"cpu cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}"
    )
    header = (
        "| users | seed | statements (distinct) | insights | hidden | traits recovered | dominant-trait ARI | "
        "mean stability | fit, cold cache (embedding) | fit, warm cache |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for size in args.sizes:
        for seed in args.seeds:
            row = measure(size, seed, embedder, args.resamples)
            print(
                f"| {size} | {seed} | {row['statements']} ({row['unique']}) | {row['insights']} | {row['hidden']} | "
                f"{100 * row['recovered']:.0f}% | {row['ari']:.2f} | {row['stability']:.2f} | "
                f"{row['cold_s']:.1f} s ({row['embed_s']:.1f} s) | {row['warm_s']:.1f} s |",
                flush=True,
            )
            print(
                f"|   | warm stages (s): {row['stages']} |||||||||",
                file=sys.stderr,
                flush=True,
            )
    for size in (size for size in args.sizes if size <= 1000):
        scores = [whole_persona_baseline(size, seed, embedder) for seed in args.seeds]
        print(
            f"baseline, whole-persona embeddings + k-means (k = 26 known), {size} users: "
            f"dominant-trait ARI {statistics.fmean(scores):.2f}"
        )
    rate = embedding_throughput(embedder)
    print(
        f"embedding throughput: {rate:.0f} distinct statements/s; the generated populations repeat wording, so a real"
        f" population of 10,000 personas x 5 distinct statements would need about {50_000 / rate:.0f} s to embed once"
        " (later runs hit the cache)"
    )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
