"""One fit on the same pairs and the same dspy.LM object: our pipeline vs PyPI ``synthesizeme`` 0.0.1.

Both get the same train/validation split (validation = the last 30% of the pairs, in file order) and are scored
the same way: each validation pair judged in both orders, a tie counts half. The LM is the packaged model behind
the batching engine (``SYNTH_BATCHING=0`` for one call at a time), DSPy's cache off so neither run reuses the
other's answers. Engine work (generations actually run, their prompt and completion tokens) is counted on the
engine, so both libraries are measured by one meter.

``quick``: ours with quick=True (3 candidates, 2 demos, 48 reasoning tokens); the official one with 3 search
candidates and 2 labeled demos. ``default``: both libraries' defaults. ``--max-tokens`` is the shared LM's limit:
ours sets its own per call, the official library uses it for every call. The official optimizers give up after
DSPy's ``max_errors`` (10) unparseable answers, which a small base model produces constantly; the limit is lifted
for both runs so the official fit completes (an unparseable call then scores as wrong, as its optimizer counts it),
and the table shows how many final validation answers had no verdict.

The official package is installed with ``pip install --no-deps synthesizeme==0.0.1`` (its only declared
requirement is an unpinned ``dspy``, so dspy 3.4.1 stays) plus ``platformdirs``, which it imports without declaring.

    PYTHONPATH=. .venv/bin/python benchmarks/fit_vs_official.py --pairs 10 --settings quick --max-tokens 256
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import dspy
from throughput import Meter

from synth.data import PreferencePair, load_pairs
from synth.lm import build_lm
from synth.pipeline import SynthesizeMe

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def as_official_row(pair: PreferencePair) -> dict:
    return {"context": [{"role": t.role, "content": t.content} for t in pair.context],
            "chosen": {"role": "assistant", "content": pair.chosen.content},
            "rejected": {"role": "assistant", "content": pair.rejected.content}}


def official_accuracy(model, validation: list[PreferencePair]) -> tuple[float, int]:
    """Accuracy over both orderings, and how many answers could not be parsed (scored as wrong)."""
    scores, unparsed = [], 0
    for pair in validation:
        row = as_official_row(pair)
        for chosen_first, wanted in ((True, "First"), (False, "Second")):
            a, b = (row["chosen"], row["rejected"]) if chosen_first else (row["rejected"], row["chosen"])
            try:
                preference = model.predict_pairwise(row["context"], a, b).preference
            except Exception:  # the official judge has no fallback: an unparseable answer is no verdict
                unparsed += 1
                preference = None
            scores.append(0.5 if preference == "Tie" else float(preference == wanted))
    return sum(scores) / len(scores), unparsed


def fit_official(official, train: list[PreferencePair], validation: list[PreferencePair]):
    official.fit([as_official_row(p) for p in train], val_data=[as_official_row(p) for p in validation])
    return official


def our_accuracy(fitted: SynthesizeMe, validation: list[PreferencePair]) -> tuple[float, int]:
    """Accuracy over both orderings, and how many verdicts were fallbacks (our judge always answers)."""
    report = fitted.evaluate(validation)
    return report.accuracy, report.verdict_fallbacks


def measure(name: str, lm: dspy.LM, fit, score, deadline: float | None) -> dict:
    """Run one fit (on a thread, so a run past ``deadline`` seconds is reported with the work it had done)."""
    meter = Meter(lm.engine)
    outcome: dict = {"error": None}

    def run() -> None:
        # The official library's optimizers stop after dspy's max_errors (10) failed calls; lifted so that a model
        # whose answers it cannot parse still completes a fit (failed calls count as wrong, as its optimizer does).
        with dspy.context(lm=lm, max_errors=1_000_000):
            try:
                outcome["fitted"] = fit()
            except Exception as failure:  # reported in the table, not hidden
                outcome["error"] = f"failed: {type(failure).__name__}: {str(failure)[:80]}"

    started = time.perf_counter()
    worker = threading.Thread(target=run, name=name, daemon=True)
    worker.start()
    worker.join(deadline)
    seconds = time.perf_counter() - started
    if worker.is_alive():
        outcome["error"] = f"not finished: stopped at the {deadline:.0f} s deadline"
    usage = {"name": name, "seconds": seconds, "generations": meter.calls, "scorings": meter.scorings,
             "prompt_tokens": meter.prompt_tokens, "completion_tokens": meter.completion_tokens,
             "error": outcome["error"], "finished": not worker.is_alive()}
    if outcome["error"] is None:
        with dspy.context(lm=lm):
            usage["val_accuracy"], usage["unparsed"] = score(outcome["fitted"])
    if usage["finished"]:
        del lm.engine.generate, lm.engine.choice_probabilities  # drop this run's meter
    return usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--settings", default="quick,default")
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=512,
                        help="the shared LM's max_tokens (ours sets its own per call; the official uses this)")
    parser.add_argument("--deadline", type=float, default=None,
                        help="seconds a fit may run; an unfinished one is reported with the work done so far")
    args = parser.parse_args()

    from synthesizeme.personalrm.synthesizeme import SynthesizeMe as OfficialSynthesizeMe

    pairs = load_pairs(ASSETS / "example_pairs.jsonl")[: args.pairs]
    cut = len(pairs) - max(1, round(0.3 * len(pairs)))
    train, validation = pairs[:cut], pairs[cut:]
    lm = build_lm("offline", cache=False, max_tokens=args.max_tokens)
    engine = "batching" if lm.engine.config.batching else "one call at a time"
    print(f"{len(train)} train / {len(validation)} validation pairs, engine {engine}, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} shared CPUs")

    rows = []
    for setting in args.settings.split(","):
        quick = setting == "quick"
        ours = SynthesizeMe(lm=lm, quick=quick, num_threads=args.threads)
        rows.append(measure(f"ours ({setting})", lm, functools.partial(ours.fit, train, val_data=validation),
                            lambda fitted: our_accuracy(fitted, validation), args.deadline))
        print_table(rows)
        official_options = {"num_search_candidates": 3, "max_labeled_demos": 2} if quick else {}
        official = OfficialSynthesizeMe(lm=lm, num_workers=args.threads, seed=0, **official_options)
        rows.append(measure(f"synthesizeme 0.0.1 ({setting})", lm, functools.partial(fit_official, official, train,
                                                                                      validation),
                            lambda fitted: official_accuracy(fitted, validation), args.deadline))
        print_table(rows)
        if not all(row["finished"] for row in rows):  # its threads still hold the model: later timings would lie
            print("stopping: a fit passed the deadline")
            sys.stdout.flush()
            os._exit(0)


def print_table(rows: list[dict]) -> None:
    print(f"\n{'run':<30}{'wall s':>9}{'generations':>13}{'scorings':>10}{'prompt tok':>12}"
          f"{'compl tok':>11}{'val acc':>9}{'no verdict':>12}")
    for row in rows:
        outcome = (f"{row['val_accuracy']:>9.2f}{row['unparsed']:>12}" if row["error"] is None
                   else f"  {row['error']}")
        print(f"{row['name']:<30}{row['seconds']:>9.1f}{row['generations']:>13}"
              f"{row['scorings']:>10}{row['prompt_tokens']:>12}{row['completion_tokens']:>11}{outcome}")
    for ours, theirs in zip(rows[::2], rows[1::2], strict=False):
        at_least = "" if theirs["finished"] else "at least "
        print(f"{theirs['name']} / {ours['name']}: wall {at_least}{theirs['seconds'] / ours['seconds']:.2f}x, "
              f"prompt tokens "
              f"{theirs['prompt_tokens'] / max(1, ours['prompt_tokens']):.2f}x, completion tokens "
              f"{theirs['completion_tokens'] / max(1, ours['completion_tokens']):.2f}x")
    print("no verdict: validation answers with no parseable preference (ours: fallbacks; official: parse errors)")
    print(f"load average now {os.getloadavg()[0]:.1f} (shared CPUs: timings are noisy)")


if __name__ == "__main__":
    main()
