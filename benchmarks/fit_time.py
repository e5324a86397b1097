"""Time SynthesizeMe fits on a local model, stage by stage, with the engine's own counters (the engine batches
unless ``SYNTH_BATCHING=0``).

Made for #3's GPU goal (a default fit on 10 pairs with Llama 3.2 3B on one H100 in at most 20 s) and usable with
any local model. Each run is a fresh fit of the first ``--pairs`` example pairs (validation = the last 30%) with
DSPy's cache off and the engine's prefix store emptied, so no run reuses another's work; the first run on a GPU
also pays for kernel warm-up, which is why ``--runs`` defaults to 2.

    PYTHONPATH=. python benchmarks/fit_time.py --model offline --pairs 10 [--quick] [--threads N] [--dtype float32]
        [--quantize none|int8|auto]
    PYTHONPATH=. python benchmarks/fit_time.py --dummy llama-3.2-3b --tokenizer DIR

``--dummy ARCH`` builds that architecture with random weights (as vLLM's ``--load-format dummy`` does for
benchmarks), for a machine that cannot download the real weights, and loads it through the normal loading path.
Only the cost is real: a random model never stops early, so every reasoning runs to its token limit (256 by
default) and every persona to 320 tokens, which makes the time an upper bound for the same fit; its verdicts
and accuracy mean nothing. The tokenizer comes from ``--tokenizer`` and the vocabulary is sized to it.

Each run prints a digest of the fit's result (timings and date left out, numbers to 4 decimals). In float32 batching
changes no text, so an engine change meant to change only the cost must leave a ``--dtype float32`` run's digest as
it was.

``--schedule gpu`` runs the engine on this machine the way it runs on a GPU (an ``EngineConfig`` whose CPU batch
and prefill rows are the GPU's, as many fit threads, a prefix store of ``--store-tokens`` tokens), so the token
counts of a GPU fit can be checked on a CPU without one, e.g. the H100 run of the 3B dummy (its store held ~126k
tokens) with the cheap ``tiny-llama``:

    PYTHONPATH=. python benchmarks/fit_time.py --dummy tiny-llama --tokenizer DIR --schedule gpu --runs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dspy
from throughput import Meter

from synth.data import load_pairs
from synth.events import StageFinished, StageStarted
from synth.lm import fit_threads, resolve_spec
from synth.lm.config import EngineConfig
from synth.lm.engine import LocalEngine
from synth.lm.loading import QUANTIZATIONS, QUANTIZE_HELP, LocalModel, isa_limits
from synth.lm.runner import kv_bytes_per_token
from synth.pipeline import SynthesizeMe

ASSETS = Path(__file__).resolve().parent.parent / "assets"

# The published shapes of models a user would run (config.json of the Hugging Face checkpoint); the vocabulary
# is taken from the tokenizer given.
DUMMY_ARCHITECTURES = {
    "llama-3.2-3b": {
        "model_type": "llama", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28,
        "num_attention_heads": 24, "num_key_value_heads": 8, "head_dim": 128, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 131072, "tie_word_embeddings": True, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192}},
    # Not a real model: the cheapest one that makes the same calls, for --schedule gpu on a CPU.
    "tiny-llama": {
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "max_position_embeddings": 131072,
        "tie_word_embeddings": True},
}


def build_dummy(architecture: str, tokenizer_dir: str, target: Path) -> str:
    """Save ``architecture`` with random bf16 weights and the given tokenizer as a checkpoint directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    shape = dict(DUMMY_ARCHITECTURES[architecture])
    config = AutoConfig.for_model(shape.pop("model_type"), **shape, vocab_size=len(tokenizer),
                                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                  pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"dummy {architecture}: {parameters / 1e9:.2f}B parameters (vocabulary {len(tokenizer):,}), saved to "
          f"{target}")
    del model
    return str(target)


def one_fit(lm: dspy.LM, pairs, args) -> dict:
    engine = lm.engine
    runner, stats = engine.runner, engine.stats
    runner.prefix_store.clear()
    stats.peak_rows = 0
    meter = Meter(engine)
    before = {"computed": runner.computed_tokens, "reused": runner.reused_tokens, "prefills": stats.prefills_run,
              "steps": stats.decode_steps, "prefill_s": stats.prefill_seconds, "decode_s": stats.decode_seconds}
    fitted = SynthesizeMe(lm=lm, quick=args.quick, num_threads=args.threads,
                          **({"reasoning_tokens": args.reasoning_tokens} if args.reasoning_tokens else {}))
    phases = PhaseCounters(engine, meter)
    started = time.perf_counter()
    fitted.fit(pairs, callback=phases.hear)
    seconds = time.perf_counter() - started
    del engine.generate, engine.choice_probabilities  # drop this run's meter
    timings = fitted.artifact_["timings"]
    steps = stats.decode_steps - before["steps"]
    decode_s = stats.decode_seconds - before["decode_s"]
    return {"seconds": seconds, "bootstrap": timings["bootstrap"], "persona": timings["persona"],
            "demos": timings["demos"], "generations": meter.calls, "scorings": meter.scorings,
            "prompt_tokens": meter.prompt_tokens, "completion_tokens": meter.completion_tokens,
            "prefilled": runner.computed_tokens - before["computed"], "reused": runner.reused_tokens - before["reused"],
            "prefills": stats.prefills_run - before["prefills"], "prefill_s": stats.prefill_seconds
            - before["prefill_s"], "steps": steps, "ms_per_step": 1000 * decode_s / max(1, steps),
            "peak_rows": stats.peak_rows, "val_accuracy": fitted.artifact_["validation_accuracy"],
            "digest": artifact_digest(fitted.artifact_), "phases": phases.totals}


class PhaseCounters:
    """The engine's counters over each stage of a fit (bootstrap, persona, demos), read at its start and end."""

    def __init__(self, engine: LocalEngine, meter: Meter):
        self.engine, self.meter = engine, meter
        self.totals: dict[str, dict[str, float]] = {}
        self._started: dict[str, float] = {}

    def read(self) -> dict[str, float]:
        runner, stats, meter = self.engine.runner, self.engine.stats, self.meter
        return {"prompt_tokens": meter.prompt_tokens, "completion_tokens": meter.completion_tokens,
                "generations": meter.calls, "scorings": meter.scorings, "prefilled": runner.computed_tokens,
                "reused": runner.reused_tokens, "prefill_s": stats.prefill_seconds, "steps": stats.decode_steps,
                "decode_s": stats.decode_seconds}

    def hear(self, event) -> None:
        if isinstance(event, StageStarted):
            self._started[event.stage.value] = self.read()
        elif isinstance(event, StageFinished):
            before, now = self._started.pop(event.stage.value), self.read()
            self.totals[event.stage.value] = {key: now[key] - before[key] for key in now} | {"seconds": event.seconds}


def artifact_digest(artifact: dict) -> str:
    """A fit's result without its timings and date, numbers to 4 decimals: in float32 an engine change that only
    changes the cost leaves it equal (how a batch splits its work moves probabilities by ~1e-7, no text)."""
    def rounded(value):
        if isinstance(value, float):
            return round(value, 4)
        if isinstance(value, dict):
            return {key: rounded(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [rounded(item) for item in value]
        return value

    result = rounded({key: value for key, value in artifact.items() if key not in ("timings", "created_at")})
    return hashlib.sha256(json.dumps(result, sort_keys=True, default=str).encode()).hexdigest()[:16]


def describe_device(model: LocalModel) -> str:
    import torch

    where = model.device
    if where == "cuda":
        where = f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    limits = f" (kernel limits: {isa_limits()})" if isa_limits() else ""
    return (f"{model.display_name} on {where}{limits} in {model.precision}, loaded in {model.load_seconds:.1f}s; "
            f"load average {os.getloadavg()[0]:.1f}")


def print_table(rows: list[dict]) -> None:
    print(f"\n{'run':>3}{'wall s':>8}{'boot s':>8}{'pers s':>8}{'demo s':>8}{'gens':>6}{'scores':>8}"
          f"{'prompt tok':>12}{'prefilled':>11}{'reused':>9}{'compl tok':>11}{'prefills':>10}{'prefill s':>11}"
          f"{'steps':>7}{'ms/step':>9}{'peak rows':>11}{'val acc':>9}")
    for index, row in enumerate(rows, 1):
        print(f"{index:>3}{row['seconds']:>8.1f}{row['bootstrap']:>8.1f}{row['persona']:>8.1f}{row['demos']:>8.1f}"
              f"{row['generations']:>6}{row['scorings']:>8}{row['prompt_tokens']:>12}{row['prefilled']:>11}"
              f"{row['reused']:>9}{row['completion_tokens']:>11}{row['prefills']:>10}{row['prefill_s']:>11.1f}{row['steps']:>7}"
              f"{row['ms_per_step']:>9.1f}{row['peak_rows']:>11}{row['val_accuracy']:>9.2f}")
    print("artifact digests: " + ", ".join(row["digest"] for row in rows))
    print(f"\n{'run':>3} {'stage':<10}{'wall s':>8}{'gens':>6}{'scores':>8}{'prompt tok':>12}{'prefilled':>11}"
          f"{'reused':>9}{'compl tok':>11}{'prefill s':>11}{'steps':>7}{'decode s':>10}")
    for index, row in enumerate(rows, 1):
        for stage, phase in row["phases"].items():
            print(f"{index:>3} {stage:<10}{phase['seconds']:>8.1f}{phase['generations']:>6}{phase['scorings']:>8}"
                  f"{phase['prompt_tokens']:>12}{phase['prefilled']:>11}{phase['reused']:>9}"
                  f"{phase['completion_tokens']:>11}{phase['prefill_s']:>11.1f}{phase['steps']:>7}"
                  f"{phase['decode_s']:>10.1f}")
    print("prompt tok: of the generations; prefilled / reused: prompt tokens of generations and scorings run through "
          "the model / taken from stored prefixes; prefills: batched prompt passes; steps: batched decoding steps; "
          "peak rows: most rows decoding together")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline", help="a model spec (see synth.lm); ignored with --dummy")
    parser.add_argument("--dummy", choices=sorted(DUMMY_ARCHITECTURES), help="random weights of this architecture")
    parser.add_argument("--tokenizer", help="tokenizer directory for --dummy")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native), bfloat16 or float32")
    parser.add_argument("--quantize", default="none", choices=QUANTIZATIONS, help=QUANTIZE_HELP)
    parser.add_argument("--threads", type=int, help="concurrent LM calls (default: the fit's, see fit_threads)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reasoning-tokens", type=int, help="the judge's reasoning limit (default: the fit's)")
    parser.add_argument("--schedule", choices=("device", "gpu"), default="device",
                        help="gpu: batch as on a GPU, whatever this device is (see above)")
    parser.add_argument("--store-tokens", type=int, default=126_000,
                        help="prefix store size in tokens for --schedule gpu (default: the H100 3B run's)")
    args = parser.parse_args()
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)  # "response was truncated": expected here
    if args.dummy and not args.tokenizer:
        parser.error("--dummy needs --tokenizer")

    spec = args.model
    if args.dummy:
        started = time.perf_counter()
        spec = build_dummy(args.dummy, args.tokenizer, Path(tempfile.mkdtemp(prefix=f"dummy-{args.dummy}-")))
        print(f"built in {time.perf_counter() - started:.1f}s")
    resolved = resolve_spec(spec)
    if not resolved.startswith("local:"):
        parser.error(f"{spec!r} is not a local model")
    model = LocalModel(resolved.removeprefix("local:"), dtype=args.dtype, quantize=args.quantize).load()
    print(describe_device(model))
    config = EngineConfig.from_env()  # SYNTH_BATCHING=0 times the engine without batching
    if args.schedule == "gpu":  # the CPU's batching limits become the GPU's; the store is sized in tokens
        config = dataclasses.replace(
            config, cpu_batch_rows=config.gpu_batch_rows, cpu_prefill_rows=config.gpu_prefill_rows,
            prefix_store_bytes=args.store_tokens * kv_bytes_per_token(model.model.config, model.model.dtype))
        args.threads = args.threads or config.gpu_batch_rows
        print(f"GPU schedule: {args.threads} threads, {config.gpu_batch_rows} rows per batch, "
              f"{config.gpu_prefill_rows} per prefill, a prefix store of {args.store_tokens:,} tokens")
    lm = LocalEngine(model, config).as_lm(cache=False)
    pairs = load_pairs(ASSETS / "example_pairs.jsonl")[: args.pairs]
    settings = "quick" if args.quick else "default"
    threads = args.threads or fit_threads(lm)
    print(f"{settings} fit on {len(pairs)} pairs, {threads} threads, DSPy cache off"
          + (", random weights: every call runs to its token limit" if args.dummy else ""))
    rows = []
    for _ in range(args.runs):
        rows.append(one_fit(lm, pairs, args))
        print_table(rows)
    if model.device == "cuda":
        import torch

        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    lm.engine.close()


if __name__ == "__main__":
    main()
