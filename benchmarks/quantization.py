"""Does int8 change the judge's decisions? The packaged model in fp32 against the same weights with int8 linear
layers (``quantize="int8"``, what ``quantize="auto"`` picks on a CPU without native bf16), on the bundled pairs.

For each precision, on this CPU and in this process:

1. the zero-shot judge (the non-personalized baseline's program, a quick fit's 48 reasoning tokens) on the held-out
   example pairs in both orderings: each judgment's verdict and P(chosen reply);
2. a seeded quick fit on the first ``--train`` example pairs (its own 70/30 split): persona, demos, validation accuracy;
3. that fitted judge on the held-out pairs: accuracy over both orderings with its 95% bootstrap interval
   (``SynthesizeMe.evaluate``, the project's evaluation).

It prints how many judgments agree between the two precisions, how far their probabilities move, whether the
fits chose the same persona and demos, and both held-out accuracies with their intervals. Each fit starts with an
empty prefix store and DSPy's cache off. To emulate a CPU with AVX2 only on a newer one, set
``ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2``
(docs/performance.md).

    PYTHONPATH=. .venv/bin/python benchmarks/quantization.py [--train 5]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dspy

from synth.data import load_pairs
from synth.judge import PairwiseJudge
from synth.lm import packaged_model_path
from synth.lm.config import EngineConfig
from synth.lm.engine import LocalEngine
from synth.lm.loading import LocalModel, isa_limits
from synth.pipeline import SynthesizeMe
from synth.signatures import TolerantChatAdapter
from synth.steps import QUICK, StepSettings, score_pairs

ASSETS = Path(__file__).resolve().parent.parent / "assets"
THREADS = 16


def measure(quantize: str, train, held_out) -> dict:
    model = LocalModel(packaged_model_path(), dtype="float32", quantize=quantize).load()
    lm = LocalEngine(model, EngineConfig()).as_lm(cache=False)
    started = time.perf_counter()
    baseline = PairwiseJudge(reasoning_tokens=QUICK["reasoning_tokens"])  # what DefaultJudge runs
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        zero_shot = score_pairs(baseline, held_out, StepSettings().max_turn_chars, THREADS)
    lm.engine.runner.prefix_store.clear()
    fitted = SynthesizeMe(lm=lm, quick=True, seed=0, num_threads=THREADS).fit(train)
    accuracy = fitted.evaluate(held_out)
    seconds = time.perf_counter() - started
    lm.engine.close()
    return {"precision": model.precision, "zero_shot": zero_shot, "persona": fitted.get_persona(),
            "demos": fitted.get_demos(), "validation": fitted.artifact_["validation_accuracy"], "held_out": accuracy,
            "seconds": seconds}


def judgments(scores) -> list[tuple[bool, float]]:
    """(right?, P(chosen)) of every judgment: each pair with its chosen reply first, then second."""
    return [(s.correct_chosen_first, s.p_correct_chosen_first) for s in scores] + [
        (s.correct_chosen_second, s.p_correct_chosen_second) for s in scores]


def compare(name: str, exact: list[tuple[bool, float]], fast: list[tuple[bool, float]]) -> None:
    same = sum(a == b for (a, _), (b, _) in zip(exact, fast, strict=True))
    moved = [abs(p - q) for (_, p), (_, q) in zip(exact, fast, strict=True)]
    print(f"{name}: verdicts agree on {same} of {len(exact)} judgments; |P(chosen) fp32 - int8| mean "
          f"{sum(moved) / len(moved):.3f}, max {max(moved):.3f}; right: fp32 {sum(a for a, _ in exact)}, "
          f"int8 {sum(b for b, _ in fast)} of {len(exact)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=5, help="example pairs the fit reads; the rest are held out")
    args = parser.parse_args()
    pairs = load_pairs(ASSETS / "example_pairs.jsonl")
    train, held_out = pairs[: args.train], pairs[args.train:]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; kernel limits: {isa_limits() or 'none'}; "
          f"quick fit on {len(train)} pairs, {len(held_out)} held out")
    runs = [measure(quantize, train, held_out) for quantize in ("none", "int8")]
    for run in runs:
        print(f"\n{run['precision']} ({run['seconds']:.0f} s): validation {run['validation']:.2f}; held-out "
              f"{run['held_out']}\n  persona: {run['persona']!r}\n  demos: {len(run['demos'])}")
    exact, fast = runs
    print()
    compare("zero-shot judge on the held-out pairs", judgments(exact["zero_shot"]), judgments(fast["zero_shot"]))
    results = list(zip(exact["held_out"].results, fast["held_out"].results, strict=True))
    print(f"fitted judges on the held-out pairs: verdicts agree on {sum(a == b for a, b in results)} of "
          f"{len(results)} judgments (each with its own persona and demos)")
    print(f"same persona: {exact['persona'] == fast['persona']}; same demos: {exact['demos'] == fast['demos']}")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
