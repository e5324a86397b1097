"""Throughput of the local engine: the same 32 judge prompts through the DSPy path, one at a time vs batched.

The prompts are real judge calls: PairwiseJudge (chain-of-thought up to the verdict slot, then the verdict read
from First/Second probabilities) over the 12 example pairs in both orders plus 8 pair-bank pairs. Both runs go
through ``synth.parallel.run_concurrently`` with 16 threads and DSPy's cache off, so the only difference is the
engine's config: ``EngineConfig(batching=False)`` (one call at a time, what ``SYNTH_BATCHING=0`` gives) or the
default (continuous batching with shared prefixes). By default the calls are a default fit's (256 reasoning tokens,
turns cut at 2,000 characters). ``--demos K`` judges with a persona and K demos, the shape of the demo-selection
step's calls, where many requests share a long prefix.

``--raw`` also times generation alone on the recorded prompts: the engine at several ``cpu_batch_rows`` against
transformers' continuous batching (``generate_batch``), which is how the CPU's batch rows were chosen.

    PYTHONPATH=. .venv/bin/python benchmarks/throughput.py [--demos 3] [--max-tokens 96] [--raw]
        [--dtype float32] [--quantize none|int8|auto]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dspy

from synth.data import PreferencePair, Turn, load_pairs
from synth.judge import PairwiseJudge
from synth.lm import packaged_model_path
from synth.lm.config import EngineConfig
from synth.lm.engine import LocalEngine
from synth.lm.loading import QUANTIZATIONS, QUANTIZE_HELP, LocalModel, isa_limits
from synth.lm.prompts import PromptFormat
from synth.lm.sampling import GenerationParams
from synth.parallel import run_concurrently
from synth.signatures import TolerantChatAdapter
from synth.steps import StepSettings, judge_inputs

ASSETS = Path(__file__).resolve().parent.parent / "assets"


FIT_DEFAULTS = StepSettings()  # a default fit's judge: 256 reasoning tokens, turns cut at 2,000 characters
# A stand-in persona and demo reasoning for the candidate-scoring workload (a real fit writes its own).
PERSONA = ("Prefers short, practical answers with concrete steps; dislikes jokes and filler; trusts replies that "
           "mention safety limits.")
DEMO_REASONING = "The first reply is direct and gives steps this person can follow; the second wanders."


def bank_pairs() -> list[PreferencePair]:
    pairs = []
    for line in (ASSETS / "pair_bank.jsonl").read_text().splitlines():
        row = json.loads(line)
        pairs.append(PreferencePair(context=(Turn("user", row["prompt"]),),
                                    chosen=Turn("assistant", row["responses"][0]["content"]),
                                    rejected=Turn("assistant", row["responses"][1]["content"])))
    return pairs


def judge_cases(count: int = 32, max_turn_chars: int = FIT_DEFAULTS.max_turn_chars) -> list[dict[str, str]]:
    """Judge inputs: example pairs in both orders, topped up with pair-bank pairs."""
    pairs = load_pairs(ASSETS / "example_pairs.jsonl")
    cases = [judge_inputs(p, chosen_first, max_turn_chars) for p in pairs for chosen_first in (True, False)]
    cases += [judge_inputs(pair, True, max_turn_chars) for pair in bank_pairs()]
    return cases[:count]


def make_judge(demo_count: int, max_tokens: int, max_turn_chars: int = FIT_DEFAULTS.max_turn_chars) -> PairwiseJudge:
    """The bootstrap step's judge (no persona, no demos) or, with demos, one candidate of the demo-selection step:
    persona in the instructions and ``demo_count`` demos from the end of the pair bank (never among the cases)."""
    if not demo_count:
        return PairwiseJudge(reasoning_tokens=max_tokens)
    demos = [dspy.Example(**judge_inputs(pair, True, max_turn_chars), reasoning=DEMO_REASONING, preferred="First")
             for pair in bank_pairs()[-demo_count:]]
    return PairwiseJudge(persona=PERSONA, demos=demos, reasoning_tokens=max_tokens)


class Meter:
    """Counts what an engine generated and scored (wraps its generate / choice_probabilities)."""

    def __init__(self, engine: LocalEngine):
        self.prompt_tokens = self.completion_tokens = self.calls = self.scorings = 0
        self.seconds = self.cpu_seconds = self.stolen_seconds = 0.0  # set by run_judges
        self.prompts: list[tuple[str, GenerationParams]] = []
        self._lock = threading.Lock()
        generate, score = engine.generate, engine.choice_probabilities

        def counted_generate(prompts, params):
            results = generate(prompts, params)
            with self._lock:
                self.calls += len(results)
                self.prompts.extend(zip(prompts, params, strict=True))
                self.prompt_tokens += sum(r.prompt_tokens for r in results)
                self.completion_tokens += sum(r.completion_tokens for r in results)
            return results

        def counted_score(prompts, choices):
            with self._lock:
                self.scorings += len(prompts)
            return score(prompts, choices)

        engine.generate, engine.choice_probabilities = counted_generate, counted_score


def run_judges(engine: LocalEngine, judge: PairwiseJudge, cases: list[dict[str, str]], max_tokens: int,
               threads: int) -> Meter:
    meter = Meter(engine)
    lm = engine.as_lm(max_tokens=max_tokens, cache=False)
    started, cpu_started, stolen_started = time.perf_counter(), time.process_time(), stolen_seconds()
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        verdicts = dict(run_concurrently(lambda case: judge(**case), cases, threads))
    meter.seconds = time.perf_counter() - started
    meter.cpu_seconds = time.process_time() - cpu_started
    meter.stolen_seconds = stolen_seconds() - stolen_started
    assert len(verdicts) == len(cases)
    return meter


def stolen_seconds() -> float:
    """CPU time the hypervisor gave to other guests so far, all cores together (Linux ``/proc/stat``; 0 elsewhere).

    On these shared cores a neighbour's load can slow one run and not the other; this column says when it did.
    """
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return 0.0
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def raw_generation(model: LocalModel, recorded: list[tuple[str, GenerationParams]], caps: list[int]) -> list[tuple]:
    """Generation alone on the recorded prompts: the engine per CPU batch-rows cap (each with an empty prefix
    store) vs transformers' generate_batch."""
    rows = []
    prompts, params = zip(*recorded, strict=True)
    for cap in caps:
        engine = LocalEngine(model, EngineConfig(cpu_batch_rows=cap))
        try:
            started = time.perf_counter()
            results = engine.generate(list(prompts), list(params))
            seconds = time.perf_counter() - started
        finally:
            engine.close()
        rows.append((f"LocalEngine.generate, {cap} CPU batch rows", seconds, sum(r.completion_tokens for r in results)))
    rows.append(continuous_batching(model, prompts, params))
    return rows


def continuous_batching(model: LocalModel, prompts, params) -> tuple:
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=max(q.max_new_tokens for q in params), do_sample=False,
                              eos_token_id=model.tokenizer.eos_token_id, pad_token_id=model.tokenizer.pad_token_id)
    encode = PromptFormat(model.tokenizer, EngineConfig().max_input_tokens).encode
    inputs = [encode(p) for p in prompts]
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
    parser.add_argument("--max-tokens", type=int, default=FIT_DEFAULTS.reasoning_tokens,
                        help="reasoning tokens per judge call (default: a default fit's)")
    parser.add_argument("--max-turn-chars", type=int, default=FIT_DEFAULTS.max_turn_chars,
                        help="turns cut to this many characters (default: a default fit's)")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--raw", action="store_true", help="also compare capacity caps and generate_batch")
    parser.add_argument("--caps", default="4,8,16,32")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native), bfloat16 or float32")
    parser.add_argument("--quantize", default="none", choices=QUANTIZATIONS, help=QUANTIZE_HELP)
    parser.add_argument("--demos", type=int, default=0,
                        help="0: the bootstrap step's judge; K: a demo-selection candidate (persona + K demos)")
    args = parser.parse_args()

    load_started = time.perf_counter()
    model = LocalModel(packaged_model_path(), dtype=args.dtype, quantize=args.quantize).load()
    limits = f" (kernel limits: {isa_limits()})" if isa_limits() else ""
    print(f"model {model.display_name} on {model.device}{limits} in {model.precision}, "
          f"loaded in {time.perf_counter() - load_started:.1f}s, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    cases = judge_cases(args.prompts, args.max_turn_chars)
    judge = make_judge(args.demos, args.max_tokens, args.max_turn_chars)
    runs = []
    for name, config in (("sequential (no batching)", EngineConfig(batching=False)), ("batched", EngineConfig())):
        engine = LocalEngine(model, config)  # each engine starts with its own, empty prefix store
        try:
            runs.append((name, run_judges(engine, judge, cases, args.max_tokens, args.threads), engine))
        finally:
            engine.close()
    (_, sequential, _), (_, batched, batching_engine) = runs
    stats = batching_engine.stats

    workload = f"persona + {args.demos} demos" if args.demos else "no persona, no demos"
    print(f"\n{len(cases)} judge calls ({workload}), {args.max_tokens} reasoning tokens max, turns cut at "
          f"{args.max_turn_chars} characters, {args.threads} threads, cache off")
    print(f"{'engine':<26}{'wall s':>9}{'cpu s':>8}{'stolen s':>10}{'gen calls':>11}{'scorings':>10}"
          f"{'prompt tok':>12}{'prefilled':>11}{'reused':>9}{'compl tok':>11}{'compl tok/s':>13}{'all tok/s':>11}")
    for name, meter, engine in runs:
        runner = engine.runner
        print(f"{name:<26}{meter.seconds:>9.1f}{meter.cpu_seconds:>8.1f}{meter.stolen_seconds:>10.1f}{meter.calls:>11}"
              f"{meter.scorings:>10}{meter.prompt_tokens:>12}{runner.computed_tokens:>11}{runner.reused_tokens:>9}"
              f"{meter.completion_tokens:>11}"
              f"{meter.completion_tokens / meter.seconds:>13.1f}"
              f"{(meter.prompt_tokens + meter.completion_tokens) / meter.seconds:>11.1f}")
    print(f"speed-up: {sequential.seconds / batched.seconds:.2f}x in wall time, "
          f"{sequential.cpu_seconds / batched.cpu_seconds:.2f}x in this process's CPU time; batched engine: "
          f"{stats.prefills_run} prefills ({stats.prefill_seconds:.1f} s), "
          f"{stats.decode_steps} decoding steps ({stats.decode_seconds:.1f} s)")
    print("prefilled = prompt tokens run through the model (scorings included); reused = taken from computed "
          "prefixes;\nstolen = CPU time the hypervisor gave other guests during the run "
          "(a run with much of it is slowed by a neighbour: compare CPU times)")

    if args.raw:
        print(f"\ngeneration only, the same {len(sequential.prompts)} rendered prompts, greedy")
        print(f"{'method':<48}{'wall s':>9}{'tokens':>8}{'tok/s':>8}")
        for name, seconds, tokens in raw_generation(model, sequential.prompts,
                                                    [int(c) for c in args.caps.split(",")]):
            print(f"{name:<48}{seconds:>9.1f}{tokens:>8}{tokens / seconds if seconds else 0:>8.1f}")
    print(f"load average now {os.getloadavg()[0]:.1f} (2 shared cores: timings are noisy)")


if __name__ == "__main__":
    main()
