"""``synth eval`` and ``synth eval-scaling``: the paper's table and its context-scaling figure from one command."""

from __future__ import annotations

import argparse
import sys

from synth.cli import common


def _add_eval_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True,
                        help="hub name (MichaelR207/prism_personalized_0125, "
                             "MichaelR207/chatbot_arena_personalized_0125, "
                             "HannahRoseKirk/prism-alignment), a .jsonl/.json/.parquet file of official rows with "
                             "user_id, or a folder holding raw PRISM conversations.jsonl + survey.jsonl")
    common.add_output_option(parser, "results folder; rerunning with the same folder resumes")
    parser.add_argument("--model-label", default=None, help="column name in the table (default: the model's name)")
    parser.add_argument("--methods", default="default,synthesizeme",
                        help="comma list of default,demographics,memory,demos,personas,synthesizeme, or all; "
                             "persona-fidelity (eval only) adds the stated-preference check")
    parser.add_argument("--users", type=common.at_least(1), default=None, help="only the first N users (default: all)")
    common.add_quick_option(parser)
    common.add_seed_option(parser, "the splits, the context sub-samples and the candidate search")
    common.add_threads_option(parser, 8, "8 for each user")
    parser.add_argument("--parallel-users", type=common.at_least(1), default=4,
                        help="users evaluated at once; they share one LM (default 4)")
    parser.add_argument("--split", default="0.5,0.2,0.3",
                        help="context,validation,test fractions when the dataset has no split column")
    parser.add_argument("--backend", choices=["threads", "ray"], default="threads",
                        help="ray: one Ray task per user (needs `pip install ray`; RAY_ADDRESS joins a cluster)")
    common.add_theta_option(parser, "the distilled Θ (e.g. made with a larger model); adds the '+ distilled Θ' "
                                    "rows of personas and synthesizeme")
    common.add_verdict_policy_option(parser)
    common.add_quiet_option(parser)
    common.add_model_options(parser)
    common.add_cache_options(parser)


def register(commands) -> None:
    """Add ``eval`` and ``eval-scaling`` to the ``synth`` sub-command parser."""
    evaluate = commands.add_parser("eval", help="PersonalRewardBench protocol over many users: the paper's table")
    _add_eval_options(evaluate)
    evaluate.set_defaults(func=cmd_eval)
    scaling = commands.add_parser("eval-scaling", help="accuracy vs number of context pairs, with a fitted slope")
    _add_eval_options(scaling)
    scaling.add_argument("--sizes", default="1,2,3,5,8,12", help="context sizes to sub-sample, comma separated")
    scaling.set_defaults(func=cmd_eval_scaling, methods="synthesizeme")


def _config(args: argparse.Namespace, methods: str | None = None):
    """The run's configuration; ``methods`` replaces ``--methods`` (empty: no per-user methods)."""
    from synth.evaluation.protocol import MethodSettings, parse_methods
    from synth.evaluation.runner import RunConfig

    try:
        fractions = tuple(float(x) for x in args.split.split(","))
    except ValueError:
        raise ValueError(f"--split: expected three numbers like 0.5,0.2,0.3, got {args.split!r}") from None
    if len(fractions) != 3:
        raise ValueError(f"--split: expected three fractions, got {args.split!r}")
    if args.theta:  # a bad Θ file is refused before any user is fitted
        from synth.theta import load_theta

        load_theta(args.theta)
    settings = MethodSettings(quick=args.quick, seed=args.seed, num_threads=args.threads,
                              verdict_policy=args.verdict_policy, distilled_theta=args.theta)
    text = args.methods if methods is None else methods
    names = parse_methods(text, distilled_theta=args.theta) if text else []
    return RunConfig(methods=tuple(names), settings=settings, fractions=fractions,
                     n_users=args.users, user_threads=args.parallel_users, backend=args.backend,
                     bootstrap_seed=args.seed)


def _lm(args: argparse.Namespace):
    """The shared LM (threads backend; none with Ray) and the options Ray workers build theirs from."""
    if args.backend == "ray":
        common.use_cache_dir(args)
        return None, common.lm_options(args)
    return common.build_lm_from(args), common.lm_options(args)


def _label(args: argparse.Namespace) -> str | None:
    """The table's column: ``--model-label``; with Ray the driver holds no LM to name, so the model spec."""
    if args.model_label:
        return args.model_label
    return (args.model or "offline") if args.backend == "ray" else None


def cmd_eval(args: argparse.Namespace) -> int:
    from synth.evaluation import fidelity
    from synth.evaluation.datasets import load_eval_dataset
    from synth.evaluation.runner import run_evaluation

    methods, with_fidelity = fidelity.split_methods(args.methods)
    config = _config(args, methods if with_fidelity else None)
    dataset = load_eval_dataset(args.dataset)
    if with_fidelity:
        fidelity.check_dataset(dataset, config.n_users)
    lm, spec = _lm(args)
    if config.methods:
        outcome = run_evaluation(dataset, lm, args.output, config, model_label=_label(args), lm_spec=spec,
                                 progress=not args.quiet)
        print(outcome.outputs["table"].read_text(encoding="utf-8"))
        for reason in outcome.skipped_users:
            print(f"skipped: {reason}", file=sys.stderr)
        print(f"{outcome.computed} results computed this run, {len(outcome.records)} in the ledger; wrote "
              + ", ".join(str(p) for p in outcome.outputs.values()))
    if with_fidelity:
        checked = fidelity.run_persona_fidelity(dataset, lm or common.build_lm_from(args), args.output, config,
                                                model_label=_label(args), progress=not args.quiet)
        print(checked.outputs["fidelity_table"].read_text(encoding="utf-8"))
        print(f"{checked.computed} users judged this run, {len(checked.records)} in the ledger; wrote "
              + ", ".join(str(p) for p in checked.outputs.values()))
    return common.EXIT_OK


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
    outcome = run_context_scaling(dataset, lm, args.output, config, sizes=sizes, model_label=_label(args),
                                  lm_spec=spec, progress=not args.quiet)
    print(outcome.outputs["summary"].read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in outcome.outputs.values()))
    return common.EXIT_OK
