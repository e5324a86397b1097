"""Throughput of the local engine: the same 32 judge prompts through the DSPy path, one at a time vs batched.

The prompts are real judge calls: PairwiseJudge (chain-of-thought up to the verdict slot, then the verdict read
from First/Second probabilities) over the 12 example pairs in both orders plus 8 pair-bank pairs. Both runs go
through ``synth.parallel.run_concurrently`` with 16 threads and DSPy's cache off, so the only difference is the
engine: LocalEngine (one call at a time, what ``SYNTH_BATCHING=0`` gives) or BatchingEngine.

``--raw`` also times generation alone on the recorded prompts: our micro-batching (at several batch caps) against
transformers' continuous batching (``generate_batch``), which is how the engine design and the CPU cap were chosen.

    .venv/bin/python benchmarks/throughput.py --max-tokens 24 --raw
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dspy  # noqa: E402

from synth.data import PreferencePair, Turn, load_pairs  # noqa: E402
from synth.judge import PairwiseJudge  # noqa: E402
from synth.lm import local as local_module  # noqa: E402
from synth.lm import packaged_model_path  # noqa: E402
from synth.lm.batching import BatchingEngine  # noqa: E402
from synth.lm.local import GenerationParams, LocalEngine, LocalModel  # noqa: E402
from synth.parallel import run_concurrently  # noqa: E402
from synth.signatures import TolerantChatAdapter  # noqa: E402
from synth.steps import judge_inputs  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def judge_cases(count: int = 32, max_turn_chars: int = 1200) -> list[dict[str, str]]:
    """Judge inputs: example pairs in both orders, topped up with pair-bank pairs."""
    pairs = load_pairs(ASSETS / "example_pairs.jsonl")
    cases = [judge_inputs(p, chosen_first, max_turn_chars) for p in pairs for chosen_first in (True, False)]
    for line in (ASSETS / "pair_bank.jsonl").read_text().splitlines():
        if len(cases) >= count:
            break
        row = json.loads(line)
        pair = PreferencePair(context=(Turn("user", row["prompt"]),),
                              chosen=Turn("assistant", row["responses"][0]["content"]),
                              rejected=Turn("assistant", row["responses"][1]["content"]))
        cases.append(judge_inputs(pair, True, max_turn_chars))
    return cases[:count]


class Meter:
    """Counts what an engine generated and scored (wraps its generate / choice_probabilities)."""

    def __init__(self, engine: LocalEngine):
        self.prompt_tokens = self.completion_tokens = self.calls = self.scorings = 0
        self.prompts: list[tuple[str, GenerationParams]] = []
        self._lock = threading.Lock()
        generate, score = engine.generate, engine.choice_probabilities

        def counted_generate(prompts, params):
            results = generate(prompts, params)
            with self._lock:
                self.calls += len(results)
                self.prompts.extend(zip(prompts, params))
                self.prompt_tokens += sum(r.prompt_tokens for r in results)
                self.completion_tokens += sum(r.completion_tokens for r in results)
            return results

        def counted_score(prompts, choices):
            with self._lock:
                self.scorings += len(prompts)
            return score(prompts, choices)

        engine.generate, engine.choice_probabilities = counted_generate, counted_score


def run_judges(engine: LocalEngine, cases: list[dict[str, str]], max_tokens: int, threads: int) -> tuple[float, Meter]:
    meter = Meter(engine)
    lm = dspy.LM(f"local/{engine.local_model.display_name}", engine=engine, temperature=0.0, max_tokens=max_tokens,
                 cache=False)
    judge = PairwiseJudge(reasoning_tokens=max_tokens)
    started = time.perf_counter()
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        verdicts = dict(run_concurrently(lambda case: judge(**case), cases, threads))
    seconds = time.perf_counter() - started
    assert len(verdicts) == len(cases)
    return seconds, meter


def raw_generation(model: LocalModel, recorded: list[tuple[str, GenerationParams]], caps: list[int]) -> list[tuple]:
    """Generation alone on the recorded prompts: micro-batching per cap vs transformers continuous batching."""
    rows = []
    prompts, params = zip(*recorded)
    saved_cap = local_module.CPU_BATCH_CAP
    try:
        for cap in caps:
            local_module.CPU_BATCH_CAP = cap
            started = time.perf_counter()
            results = model.generate(list(prompts), list(params))
            seconds = time.perf_counter() - started
            rows.append((f"micro-batch, cap {cap}", seconds, sum(r.completion_tokens for r in results)))
    finally:
        local_module.CPU_BATCH_CAP = saved_cap
    rows.append(continuous_batching(model, prompts, params))
    return rows


def continuous_batching(model: LocalModel, prompts, params) -> tuple:
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max(q.max_new_tokens for q in params), do_sample=False,
                              eos_token_id=model.tokenizer.eos_token_id, pad_token_id=model.tokenizer.pad_token_id)
    inputs = [model.encode(p) for p in prompts]
    started = time.perf_counter()
    try:
        outputs = model.model.generate_batch(inputs=inputs, generation_config=config, progress_bar=False)
    except Exception as error:  # report, do not hide: this is one of the compared designs
        return (f"transformers generate_batch FAILED: {type(error).__name__}: {str(error)[:120]}",
                time.perf_counter() - started, 0)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.generated_tokens) for o in outputs.values())
    return ("transformers generate_batch (continuous)", seconds, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=24, help="reasoning tokens per judge call")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--raw", action="store_true", help="also compare micro-batching caps and generate_batch")
    parser.add_argument("--caps", default="4,8,16,32")
    args = parser.parse_args()

    load_started = time.perf_counter()
    model = LocalModel(packaged_model_path()).load()
    print(f"model {model.display_name} on {model.device}, loaded in {time.perf_counter() - load_started:.1f}s, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    cases = judge_cases(args.prompts)
    sequential_s, sequential = run_judges(LocalEngine(model), cases, args.max_tokens, args.threads)
    batching_engine = BatchingEngine(model)
    try:
        batched_s, batched = run_judges(batching_engine, cases, args.max_tokens, args.threads)
        batches = batching_engine.batches_run
    finally:
        batching_engine.close()

    print(f"\n{len(cases)} judge calls, {args.max_tokens} reasoning tokens max, {args.threads} threads, cache off")
    print(f"{'engine':<28}{'wall s':>9}{'gen calls':>11}{'scorings':>10}{'prompt tok':>12}{'compl tok':>11}"
          f"{'compl tok/s':>13}{'all tok/s':>11}")
    for name, seconds, meter in (("sequential (LocalEngine)", sequential_s, sequential),
                                 (f"batched ({batches} batches)", batched_s, batched)):
        print(f"{name:<28}{seconds:>9.1f}{meter.calls:>11}{meter.scorings:>10}{meter.prompt_tokens:>12}"
              f"{meter.completion_tokens:>11}{meter.completion_tokens / seconds:>13.1f}"
              f"{(meter.prompt_tokens + meter.completion_tokens) / seconds:>11.1f}")
    print(f"speed-up (wall time): {sequential_s / batched_s:.2f}x; scorings that reused the judge's prompt "
          f"states: {model.prompt_state_hits} of {sequential.scorings + batched.scorings}")

    if args.raw:
        print(f"\ngeneration only, the same {len(sequential.prompts)} rendered prompts, greedy")
        print(f"{'method':<48}{'wall s':>9}{'tokens':>8}{'tok/s':>8}")
        for name, seconds, tokens in raw_generation(model, sequential.prompts,
                                                    [int(c) for c in args.caps.split(",")]):
            print(f"{name:<48}{seconds:>9.1f}{tokens:>8}{tokens / seconds if seconds else 0:>8.1f}")
    print(f"load average now {os.getloadavg()[0]:.1f} (2 shared cores: timings are noisy)")


if __name__ == "__main__":
    main()
