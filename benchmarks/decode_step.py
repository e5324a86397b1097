"""Where a batched decoding step's time goes in the local engine: the model's forward vs the engine's own work.

For each batch size, that many rows of ``--context`` random tokens are prefilled into one ``DecodeBatch``, then
``--steps`` decoding steps are timed three ways, each on a freshly prefilled batch:

- step: ``DecodeBatch.step()`` as the engine runs it (token choice, stop checks, the forward);
- forward: the model's forward alone, waiting for the device before and after it;
- launch: the same forward without waiting (on CUDA: the CPU's cost of issuing the GPU work).

On a GPU, launch close to forward means the step is bound by Python and kernel launches, not by the GPU.

    PYTHONPATH=. python benchmarks/decode_step.py --model offline --batches 1,4,16 --context 600 --steps 10
        [--dtype float32] [--quantize none|int8|auto]
    PYTHONPATH=. python benchmarks/decode_step.py --dummy llama-3.2-3b --tokenizer DIR --batches 1,16,64
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_time import DUMMY_ARCHITECTURES, build_dummy

from synth.lm import resolve_spec
from synth.lm.config import EngineConfig
from synth.lm.loading import QUANTIZATIONS, QUANTIZE_HELP, LocalModel
from synth.lm.runner import DecodeBatch, DecodeRow, ModelRunner
from synth.lm.sampling import GenerationParams

STOP = ("[[ ## preferred ## ]]",)  # the judge's stop string, so stop checks cost what they cost in a fit


def synchronize(runner: ModelRunner) -> None:
    import torch

    if runner.device == "cuda":
        torch.cuda.synchronize()


def filled_batch(runner: ModelRunner, rows: int, context: int, steps: int) -> tuple[DecodeBatch, float]:
    """A batch of ``rows`` random ``context``-token prompts after their prefill, and the prefill's seconds."""
    generator = random.Random(rows)
    vocabulary = runner.tokenizer.vocab_size
    decode_rows = [DecodeRow("", [generator.randrange(1000, vocabulary) for _ in range(context)],
                             GenerationParams(max_new_tokens=steps + 1, stop=STOP), tag=index)
                   for index in range(rows)]
    runner.prefix_store.clear()
    batch = DecodeBatch(runner)
    synchronize(runner)
    started = time.perf_counter()
    batch.admit(decode_rows)
    synchronize(runner)
    return batch, time.perf_counter() - started


def time_steps(runner: ModelRunner, rows: int, context: int, steps: int, forward_sync: bool | None) -> list[float]:
    """Seconds per step, or per forward when ``forward_sync`` is set (True: waiting for the device)."""
    batch, _ = filled_batch(runner, rows, context, steps)
    network = runner.network
    spent: list[float] = []
    if forward_sync is not None:
        original = network.forward

        def timed_forward(*args, **kwargs):
            if forward_sync:
                synchronize(runner)
            started = time.perf_counter()
            output = original(*args, **kwargs)
            if forward_sync:
                synchronize(runner)
            spent.append(time.perf_counter() - started)
            return output

        network.forward = timed_forward  # the instance attribute shadows the method for this batch only
    try:
        for _ in range(steps):
            started = time.perf_counter()
            batch.step()
            if forward_sync is None:
                spent.append(time.perf_counter() - started)
        synchronize(runner)
    finally:
        network.__dict__.pop("forward", None)
        batch.clear()
    return spent[1:]  # the first step pays for the prefill's queued work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline")
    parser.add_argument("--dummy", choices=sorted(DUMMY_ARCHITECTURES))
    parser.add_argument("--tokenizer")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--context", type=int, default=2000, help="prompt tokens per row")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native), bfloat16 or float32")
    parser.add_argument("--quantize", default="none", choices=QUANTIZATIONS, help=QUANTIZE_HELP)
    parser.add_argument("--profile", action="store_true",
                        help="also profile steps at the largest batch (torch.profiler: top operators by time)")
    args = parser.parse_args()
    if args.dummy and not args.tokenizer:
        parser.error("--dummy needs --tokenizer")

    source = resolve_spec(args.model).removeprefix("local:")
    if args.dummy:
        source = build_dummy(args.dummy, args.tokenizer, Path(tempfile.mkdtemp(prefix=f"dummy-{args.dummy}-")))
    runner = ModelRunner(LocalModel(source, dtype=args.dtype, quantize=args.quantize).load(), EngineConfig())
    print(f"{runner.local_model.display_name} on {runner.device} in {runner.local_model.precision}; "
          f"{args.context}-token prompts, {args.steps} steps")
    print(f"{'rows':>5}{'prefill s':>11}{'prefill tok/s':>15}{'step ms':>9}{'forward ms':>12}{'launch ms':>11}"
          f"{'tok/s':>9}")
    for rows in (int(b) for b in args.batches.split(",")):
        _, prefill_seconds = filled_batch(runner, rows, args.context, args.steps)
        step, forward, launch = (1000 * sum(t) / len(t) for t in (
            time_steps(runner, rows, args.context, args.steps, None),
            time_steps(runner, rows, args.context, args.steps, True),
            time_steps(runner, rows, args.context, args.steps, False)))
        print(f"{rows:>5}{prefill_seconds:>11.2f}{rows * args.context / prefill_seconds:>15.0f}{step:>9.1f}"
              f"{forward:>12.1f}{launch:>11.1f}{1000 * rows / step:>9.0f}")
    if args.profile:
        profile_steps(runner, rows, args.context, args.steps)


def profile_steps(runner: ModelRunner, rows: int, context: int, steps: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    batch, _ = filled_batch(runner, rows, context, steps)
    batch.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runner.device == "cuda" else [])
    with profile(activities=activities) as profiler:
        for _ in range(steps - 1):
            batch.step()
        synchronize(runner)
    batch.clear()
    for key in ("self_cpu_time_total",) + (("self_cuda_time_total",) if runner.device == "cuda" else ()):
        print(f"\n{steps - 1} steps at {rows} rows, top operators by {key}")
        print(profiler.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=50))


if __name__ == "__main__":
    main()
