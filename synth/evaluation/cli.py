"""``synth eval`` and ``synth eval-scaling``: the paper's table and its context-scaling figure from one command.

``synth.cli`` registers them; ``main(argv)`` runs these commands on their own (tests, scripts).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from synth.cli import EXIT_OK


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True,
                        help="hub name (MichaelR207/prism_personalized_0125, "
                             "MichaelR207/chatbot_arena_personalized_0125, "
                             "HannahRoseKirk/prism-alignment), a .jsonl/.json/.parquet file of official rows with "
                             "user_id, or a folder holding raw PRISM conversations.jsonl + survey.jsonl")
    parser.add_argument("--model", default=None,
                        help="offline (packaged Gemma 3 270M, default), llama-3.2-3b, local:<hf id|dir|.gguf>, or a "
                             "LiteLLM id; for a vLLM server: openai/<served name> with --api-base")
    parser.add_argument("--api-base", default=None, help="OpenAI-compatible server URL, e.g. http://host:8000/v1")
    parser.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cuda, mps or cpu")
    parser.add_argument("--cache-dir", default=None, help="DSPy response cache (default $SYNTH_CACHE_DIR/dspy)")
    parser.add_argument("--model-label", default=None, help="column name in the table (default: the model's name)")
    parser.add_argument("--methods", default="default,synthesizeme",
                        help="comma list of default,demographics,memory,demos,personas,synthesizeme, or all")
    parser.add_argument("--users", type=int, default=None, help="only the first N users (default: all)")
    parser.add_argument("--out", required=True, help="results folder; rerunning with the same folder resumes")
    parser.add_argument("--quick", action="store_true", help="as in `synth fit --quick`: 3 candidates, 2 demos, "
                                                             "short reasoning")
    parser.add_argument("--seed", type=int, default=0, help="splits, sub-sampling and candidate search")
    parser.add_argument("--threads", type=int, default=4, help="users evaluated at once (they share one LM)")
    parser.add_argument("--lm-threads", type=int, default=8, help="concurrent LM calls within one user")
    parser.add_argument("--split", default="0.5,0.2,0.3",
                        help="context,validation,test fractions when the dataset has no split column")
    parser.add_argument("--backend", choices=["threads", "ray"], default="threads",
                        help="ray: one Ray task per user (needs `pip install ray`; RAY_ADDRESS joins a cluster)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    """Add ``eval`` and ``eval-scaling`` to a ``synth`` sub-command parser."""
    evaluate = subparsers.add_parser("eval", help="PersonalRewardBench protocol over many users: the paper's table")
    _add_common(evaluate)
    evaluate.set_defaults(func=cmd_eval)
    scaling = subparsers.add_parser("eval-scaling", help="accuracy vs number of context pairs, with a fitted slope")
    _add_common(scaling)
    scaling.add_argument("--sizes", default="1,2,3,5,8,12", help="context sizes to sub-sample, comma separated")
    scaling.set_defaults(func=cmd_eval_scaling, methods="synthesizeme")


def _config(args: argparse.Namespace):
    from synth.evaluation.protocol import MethodSettings, parse_methods
    from synth.evaluation.runner import RunConfig

    try:
        fractions = tuple(float(x) for x in args.split.split(","))
    except ValueError:
        raise ValueError(f"--split: expected three numbers like 0.5,0.2,0.3, got {args.split!r}") from None
    if len(fractions) != 3:
        raise ValueError(f"--split: expected three fractions, got {args.split!r}")
    settings = MethodSettings(quick=args.quick, seed=args.seed, num_threads=args.lm_threads)
    return RunConfig(methods=tuple(parse_methods(args.methods)), settings=settings, fractions=fractions,
                     n_users=args.users, user_threads=args.threads, backend=args.backend, bootstrap_seed=args.seed)


def _lm(args: argparse.Namespace):
    """The shared LM (threads backend) and the spec Ray workers rebuild it from."""
    from synth.lm import build_lm, configure_cache

    spec = {"spec": args.model, "api_base": args.api_base, "device": args.device}
    if args.backend == "ray":
        return None, spec
    configure_cache(args.cache_dir)
    return build_lm(**spec), spec


def cmd_eval(args: argparse.Namespace) -> int:
    from synth.evaluation.datasets import load_eval_dataset
    from synth.evaluation.runner import run_evaluation

    config = _config(args)
    dataset = load_eval_dataset(args.dataset)
    lm, spec = _lm(args)
    outcome = run_evaluation(dataset, lm, args.out, config, model_label=args.model_label or _ray_label(args),
                             lm_spec=spec, progress=not args.quiet)
    print(outcome.outputs["table"].read_text(encoding="utf-8"))
    for reason in outcome.skipped_users:
        print(f"skipped: {reason}", file=sys.stderr)
    print(f"{outcome.computed} results computed this run, {len(outcome.records)} in the ledger; wrote "
          + ", ".join(str(p) for p in outcome.outputs.values()))
    return EXIT_OK


def cmd_eval_scaling(args: argparse.Namespace) -> int:
    from synth.evaluation.context_scaling import run_context_scaling
    from synth.evaluation.datasets import load_eval_dataset

    try:
        sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--sizes: expected integers like 1,2,4,8, got {args.sizes!r}") from None
    config = _config(args)
    dataset = load_eval_dataset(args.dataset)
    lm, spec = _lm(args)
    outcome = run_context_scaling(dataset, lm, args.out, config, sizes=sizes,
                                  model_label=args.model_label or _ray_label(args), lm_spec=spec,
                                  progress=not args.quiet)
    print(outcome.outputs["summary"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in outcome.outputs.values()))
    return EXIT_OK


def _ray_label(args: argparse.Namespace) -> str | None:
    """With Ray the driver holds no LM to name, so the table column is the model spec."""
    return (args.model or "offline") if args.backend == "ray" else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth", description="SynthesizeMe evaluation harness")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from synth.cli import run_command

    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
