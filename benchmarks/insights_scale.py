"""Time per stage and peak memory of population insights at 1k, 10k and 100k personas, and embedding throughput.

    HF_HUB_OFFLINE=1 python benchmarks/insights_scale.py [--sizes 1000 10000 100000] [--precomputed 100000]
        [--skip-throughput]

Each size runs in its own process (a cold start), so its peak resident memory
is its own. The default pipeline runs with 5 stability re-runs. Two kinds of population:
- generated: the catalog generator's personas, embedded with the packaged all-MiniLM-L6-v2 from a cold (empty)
  cache: the figure for "10k personas, cold";
- precomputed (sizes listed after `--precomputed`; by default those above 10k): every persona carries ~5
  statements made distinct by a number (so almost nothing repeats, as in a real population), and their vectors come
  from a Parquet file through `PrecomputedEmbedder`, the path of `synth insights --embeddings` (each statement's
  vector is its wording's MiniLM vector plus noise, cosine ~0.92): the figure for "everything after the embeddings".
"peak after" columns: the peak resident memory since the fit began, once that stage finished (a high-water mark,
so the stage where it jumps is the one that needed the memory).
The throughput rows embed 2,000 distinct statements in float32, with bfloat16 weights (the default on AMX) at several
batch sizes, under bfloat16 autocast, and with int8 dynamic quantization (torch.ao), with each one's lowest cosine
to float32; and the pipeline's own path, the default precision with filler words left out of the pooling (token
vectors, then a masked mean).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synth.insights import CachedEmbedder, Persona, PopulationInsights, SentenceTransformerEmbedder, trait_core
from synth.insights.embedding import PrecomputedEmbedder
from synth.insights.splitting import SentenceSplitter
from synth.insights.synthetic import generate_population

STAGES = ("split", "embed", "reduce", "cluster", "stability", "name", "project")
MEMORY_MARKS = {"_embed": "embed", "_reduce": "reduce", "_measure_stability": "stability", "_assemble": "assemble"}


def _memory_gib(field: str) -> float:
    """A memory figure of this process from /proc/self/status: VmHWM (peak resident) or VmRSS (resident now)."""
    for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _peak_gib() -> float:
    return _memory_gib("VmHWM")


def _reset_peak() -> None:
    """Start the peak-resident mark afresh (Linux: writing 5 to clear_refs), so the fit's peak is not the set-up's."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")


def _mark_memory(insights: PopulationInsights) -> dict[str, float]:
    """Record the peak resident memory after some stages of `insights.fit` (filled in as it runs)."""
    marks: dict[str, float] = {}
    for method_name, stage in MEMORY_MARKS.items():
        method = getattr(insights, method_name)

        def marked(*args, method=method, stage=stage) -> None:
            method(*args)
            marks[stage] = _peak_gib()

        setattr(insights, method_name, marked)
    return marks


def _distinct_population(n_users: int, folder: Path) -> tuple[list[Persona], Path]:
    """Personas whose statements never repeat, and a Parquet file with a vector for each text the pipeline embeds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    splitter = SentenceSplitter()
    personas, base_of = [], {}
    number = 0
    for user in generate_population(n_users, seed=7).users:
        statements = []
        for statement in splitter.split(user.persona.text):
            number += 1
            statements.append(f"{statement.rstrip('.')} #{number}.")
            base_of[trait_core(statements[-1])] = trait_core(statement)
        personas.append(Persona(user.persona.user_id, " ".join(statements), tuple(statements)))
    texts = PopulationInsights().texts_to_embed(personas)
    bases = [base_of[text] for text in texts]
    distinct_bases = list(dict.fromkeys(bases))
    with tempfile.TemporaryDirectory() as cache:
        base_vectors = CachedEmbedder(SentenceTransformerEmbedder(), cache).embed(distinct_bases)
    index = {base: i for i, base in enumerate(distinct_bases)}
    rng = np.random.default_rng(0)
    vectors = base_vectors[[index[base] for base in bases]]
    vectors += 0.022 * rng.standard_normal(size=vectors.shape, dtype=np.float32)
    path = folder / "embeddings.parquet"
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel(), pa.float32()), vectors.shape[1])
    pq.write_table(pa.table({"text": texts, "embedding": column}), path)
    return personas, path


def run_one(n_users: int, precomputed: bool) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        if not precomputed:
            personas = generate_population(n_users, seed=7).personas
            embedder = CachedEmbedder(SentenceTransformerEmbedder(), Path(folder) / "cache")
            embedder.embed(["load the model before the clock starts"])
        else:
            personas, path = _distinct_population(n_users, Path(folder))
            start = time.perf_counter()
            embedder = PrecomputedEmbedder(path)
            read_seconds = time.perf_counter() - start
        before = _memory_gib("VmRSS")
        _reset_peak()
        insights = PopulationInsights(embedder=embedder, n_resamples=5)
        marks = _mark_memory(insights)
        start = time.perf_counter()
        result = insights.fit(personas)
        total = time.perf_counter() - start
    seconds = dict(result.params["seconds"])
    if precomputed:
        seconds["embed"] = round(seconds["embed"] + read_seconds, 3)
    return {
        "users": n_users,
        "statements": result.params["n_statements"],
        "distinct": result.params["n_unique_statements"],
        "insights": len(result.leaves),
        "seconds": seconds,
        "total": total,
        "after_embeddings": sum(seconds[stage] for stage in STAGES if stage not in ("split", "embed")),
        "precomputed": precomputed,
        "before_gib": before,
        "marks": marks,
        "peak_gib": _peak_gib(),
        "load": os.getloadavg()[0],
    }


def throughput() -> list[tuple[str, int, float, float]]:
    """(variant, batch size, distinct statements per second, lowest cosine to the float32 vectors)."""
    import torch

    splitter = SentenceSplitter()
    statements = [s for user in generate_population(600, seed=99).users for s in splitter.split(user.persona.text)]
    texts = [f"{trait_core(statement)} (case {i})" for i, statement in enumerate(statements[:2000])]
    reference = SentenceTransformerEmbedder(precision="float32").embed(texts)
    rows = []
    bf16 = "bfloat16 weights (default on AMX / AVX512-BF16)"
    variants = [("float32 (default elsewhere)", 256), (bf16, 64), (bf16, 256), (bf16, 1024)]
    for variant, batch_size in variants:
        embedder = SentenceTransformerEmbedder(batch_size=batch_size, precision=variant.split()[0])
        embedder.embed(texts[:64])
        start = time.perf_counter()
        vectors = embedder.embed(texts)
        rows.append((variant, batch_size, len(texts) / (time.perf_counter() - start),
                     float(np.min(np.sum(vectors * reference, axis=1)))))
    for variant, encoder in (
        ("bfloat16 autocast, float32 weights", SentenceTransformerEmbedder(precision="float32")._load()),
        ("int8 dynamic (torch.ao)", torch.ao.quantization.quantize_dynamic(
            SentenceTransformerEmbedder(precision="float32")._load(), {torch.nn.Linear}, dtype=torch.qint8)),
    ):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="autocast" in variant):
            encoder.encode(texts[:64], batch_size=256)
            start = time.perf_counter()
            vectors = encoder.encode(texts, batch_size=256, normalize_embeddings=True, convert_to_numpy=True)
        rows.append((variant, 256, len(texts) / (time.perf_counter() - start),
                     float(np.min(np.sum(np.asarray(vectors, dtype=np.float32) * reference, axis=1)))))
    # The pipeline's own path: filler words (those a fit of these personas finds) left out of the mean pooling.
    embedder = SentenceTransformerEmbedder()
    with tempfile.TemporaryDirectory() as cache:
        fitted = PopulationInsights(embedder=CachedEmbedder(embedder, cache), n_resamples=0)
        fitted.fit(generate_population(600, seed=99).personas)
    start = time.perf_counter()
    embedder.embed_ignoring(texts, fitted.filler_words_)
    rows.append((f"default precision, {len(fitted.filler_words_)} filler words left out of the pooling", 256,
                 len(texts) / (time.perf_counter() - start), float("nan")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 10_000, 100_000],
                        help="persona counts (none: only the throughput table)")
    parser.add_argument("--precomputed", type=int, nargs="*",
                        help="sizes to run with precomputed vectors (default: those above 10,000)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--one-precomputed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print(json.dumps(run_one(args.one, args.one_precomputed)))
        return
    precomputed = set(args.precomputed if args.precomputed is not None else [n for n in args.sizes if n > 10_000])
    from benchmarks.insights_quality import _cpu_name

    print(f"CPU: {_cpu_name()}, {os.cpu_count()} cores, torch threads: all")
    marks = list(MEMORY_MARKS.values())
    print("| personas | vectors | statements (distinct) | insights | " + " | ".join(STAGES) +
          " | after the embeddings | whole fit | resident before fit | " + " | ".join(f"peak after {m}" for m in marks)
          + " | load average |")
    print("|---" * (len(STAGES) + len(marks) + 9) + "|")
    for size in args.sizes:
        command = [sys.executable, __file__, "--one", str(size)]
        command += ["--one-precomputed"] if size in precomputed else []
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        print(f"| {size:,} | {'precomputed' if row['precomputed'] else 'MiniLM, cold cache'} | "
              f"{row['statements']:,} ({row['distinct']:,}) | {row['insights']} | "
              + " | ".join(f"{row['seconds'][stage]:.1f} s" for stage in STAGES)
              + f" | {row['after_embeddings']:.1f} s | {row['total']:.1f} s | {row['before_gib']:.2f} GiB | "
              + " | ".join(f"{row['marks'][m]:.2f} GiB" for m in marks)
              + f" | {row['load']:.1f} |", flush=True)
    if not args.skip_throughput:
        print("\n| variant | batch | distinct statements / s | lowest cosine to float32 |\n|---|---|---|---|")
        for variant, batch_size, rate, cosine in throughput():
            print(f"| {variant} | {batch_size} | {rate:.0f} | {'–' if np.isnan(cosine) else f'{cosine:.4f}'} |",
                  flush=True)
        print(f"load average at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
