"""``synth fit``, ``judge``, ``persona`` and ``optimize-theta``: one user's judge, and the persona-writing program Θ.

Each command renders the engine's events or results; none of them contains method logic.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from synth.cli import common
from synth.data import PairFileError, PreferencePair, load_pairs, parse_json


class ProgressView:
    """Renders fit events as a progress bar with stage names plus one line per trace and candidate."""

    def __init__(self, stream=None, verbose: bool = True):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.stream = stream or sys.stderr
        self.verbose = verbose
        self.bar = None

    def __call__(self, event) -> None:
        from synth import events as ev
        from synth.judge import VERIFIED_SOURCES

        if isinstance(event, ev.StageStarted):
            self._close()
            self.bar = self._tqdm(total=event.total_steps, desc=event.stage.title, file=self.stream, leave=True,
                                  bar_format="{desc}: {n_fmt} steps [{elapsed}] {postfix}")
        elif isinstance(event, ev.TraceBootstrapped):
            mark = "kept" if event.kept else "rejected"
            how = "" if event.verdict_source in VERIFIED_SOURCES else f" ({event.verdict_source}: not verified)"
            self._write(f"  pair {event.pair_index + 1}: judge said {event.verdict}{how}, user chose "
                        f"{event.user_choice} -> {mark}")
            self._step()
        elif isinstance(event, ev.CandidateScored):
            star = " *best so far" if event.best_so_far else ""
            self._write(f"  candidate {event.candidate_id} ({event.kind}, {event.n_demos} demos): "
                        f"validation {100 * event.accuracy:.0f}%{star}")
            self._step()
        elif isinstance(event, ev.PersonaReady):
            self._step()
        elif isinstance(event, (ev.StageFinished, ev.FitFinished)):
            self._close()

    def _step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def _write(self, line: str) -> None:
        if self.verbose:
            (self.bar.write if self.bar is not None else print)(line, file=self.stream)

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _wrap(text: str, indent: str = "  ") -> str:
    return "\n".join(textwrap.fill(p, width=100, initial_indent=indent, subsequent_indent=indent)
                     for p in (text or "").splitlines() if p.strip())


def print_summary(artifact: dict[str, Any], out=None) -> None:
    out = out or sys.stdout
    usage = artifact.get("lm_usage", {})
    print("Persona:", file=out)
    print(_wrap(artifact.get("persona") or "(empty: the model wrote no persona)"), file=out)
    print(f"\nDemos chosen: {len(artifact.get('demos', []))}", file=out)
    for number, demo in enumerate(artifact.get("demos", []), start=1):
        first_line = demo.get("conversation", "").splitlines()[0] if demo.get("conversation") else ""
        print(f"  {number}. {first_line[:90]} -> {demo.get('preferred')}", file=out)
    print(f"\nValidation accuracy: personalized {100 * artifact['validation_accuracy']:.1f}% vs default judge "
          f"{100 * artifact['default_validation_accuracy']:.1f}% (both orderings)", file=out)
    print(f"Model: {artifact['model']} | Θ: {artifact['theta_id']} | {usage.get('lm_calls', 0)} LM calls, "
          f"{usage.get('prompt_tokens', 0):,} prompt + {usage.get('completion_tokens', 0):,} completion tokens | "
          f"{artifact['timings']['total']:.0f}s", file=out)
    sources = ", ".join(f"{name} {count}" for name, count in artifact.get("verdict_sources", {}).items())
    print(f"Verdicts ({artifact.get('verdict_policy')}): {sources or 'none'} | verdict fallbacks: "
          f"{artifact['verdict_fallbacks']}", file=out)


def cmd_fit(args: argparse.Namespace) -> int:
    from synth.pipeline import SynthesizeMe

    pairs = load_pairs(args.pairs)
    val_data = load_pairs(args.val) if args.val else None
    model = SynthesizeMe(lm=common.build_lm_from(args), user_id=args.user_id, num_candidates=args.num_candidates,
                         max_demos=args.max_demos, seed=args.seed, theta=args.theta, quick=args.quick,
                         num_threads=args.threads, verdict_policy=args.verdict_policy, tie_break=args.tie_break,
                         stop_at_score=args.stop_at_score)
    model.fit(pairs, val_data=val_data, callback=ProgressView(verbose=not args.quiet))
    written = model.save(args.output)
    print_summary(model.artifact_)
    print(f"\nSaved {written}")
    return common.EXIT_OK


def read_pair_file(path: str) -> tuple[Any, Any, Any]:
    """A pair to judge as (context, a, b): from a full preference row, or from {context, a, b} with no labels."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PairFileError(path, None, None, f"cannot read ({exc})") from None
    row = parse_json(text, lambda line, reason: PairFileError(path, line, None, reason))
    if isinstance(row, dict) and {"a", "b"} <= row.keys():
        for name in ("a", "b"):
            if not isinstance(row[name], str) or not row[name].strip():
                raise PairFileError(path, 1, name, "must be a non-empty string")
        if not row.get("context"):
            raise PairFileError(path, 1, "context", "missing or empty")
        # the context is checked as a preference row's would be, so a wrong type names its field
        unlabelled = PreferencePair.from_dict({"context": row["context"], "chosen": "a", "rejected": "b"}, path=path,
                                              line=1)
        return unlabelled.context, row["a"], row["b"]
    pair = PreferencePair.from_dict(row, path=path, line=1)
    return pair.context, pair.chosen, pair.rejected


def cmd_judge(args: argparse.Namespace) -> int:
    from synth.pipeline import DefaultJudge, SynthesizeMe

    context, a, b = read_pair_file(args.pair)
    lm = common.build_lm_from(args)
    model = SynthesizeMe.load(args.artifact, lm=lm)
    p_personal = model.predict_proba(context, a, b)
    print(f"Personalized judge: {'A' if p_personal >= 0.5 else 'B'} preferred (P(A) = {p_personal:.2f})")
    if args.compare_default:
        p_default = DefaultJudge(lm=lm).predict_proba(context, a, b)
        print(f"Default judge:      {'A' if p_default >= 0.5 else 'B'} preferred (P(A) = {p_default:.2f})")
    return common.EXIT_OK


def cmd_persona(args: argparse.Namespace) -> int:
    from synth.pipeline import SynthesizeMe

    model = SynthesizeMe.load(args.artifact)
    if args.format == "judge-prompt":
        print(json.dumps(model.get_llm_judge_prompt(), ensure_ascii=False, indent=2))
    elif args.format == "generation-prompt":
        print(model.get_generation_prompt())
    elif args.format == "statements":
        from synth.insights.splitting import persona_statements

        statements = persona_statements(model.get_persona())
        print("\n".join(statements) if statements else "(no statements: the persona is empty)",
              file=sys.stdout if statements else sys.stderr)
    else:
        print(model.get_persona())
    return common.EXIT_OK


def cmd_optimize_theta(args: argparse.Namespace) -> int:
    from synth.optimize import optimize_theta

    pairs = load_pairs(args.pairs)
    lm = common.build_lm_from(args)
    teacher = common.build_lm_from(args, spec=args.teacher_model) if args.teacher_model else None
    result = optimize_theta(pairs, lm=lm, prompt_lm=teacher, output=args.output, auto=args.auto,
                            max_users=args.max_users, seed=args.seed, quick=args.quick, num_threads=args.threads,
                            max_demos=args.theta_demos, start_theta=args.theta)
    print(f"Θ {result.theta_id} saved to {args.output}: mean validation accuracy {100 * result.baseline:.1f}% "
          f"with the starting Θ -> {100 * result.optimized:.1f}% with the new one ({result.n_users} users)")
    return common.EXIT_OK


def _default_text(setting: str) -> str:
    from synth.steps import QUICK, StepSettings

    default = getattr(StepSettings(), setting)
    return f"default {'no cap' if default is None else default}; {QUICK[setting]} with --quick"


def register(commands) -> None:
    """Add ``fit``, ``judge``, ``persona`` and ``optimize-theta`` to the ``synth`` sub-command parser."""
    fit = commands.add_parser("fit", help="fit a personalized judge from one user's preference pairs")
    fit.add_argument("pairs", help="preference pairs in the official format (JSONL or a JSON list)")
    common.add_output_option(fit, "artifact JSON file to write; a folder (existing, or ending in /) gets the "
                                  "official library's layout instead")
    fit.add_argument("--val", help="explicit validation pairs (default: PAIRS after its first 70%%)")
    fit.add_argument("--user-id", default=None,
                     help="the user's id, naming the official layout's files (default: the pairs' user_id)")
    common.add_quick_option(fit)
    fit.add_argument("--num-candidates", type=common.at_least(0), default=None,
                     help=f"random demo sets tried per search step ({_default_text('num_candidates')})")
    fit.add_argument("--max-demos", type=common.at_least(1), default=None,
                     help=f"most demos in one candidate set ({_default_text('max_demos')}; with no cap the "
                          "model's context decides)")
    fit.add_argument("--tie-break", choices=["confidence", "first"], default="confidence",
                     help="equal validation accuracy goes to the more confident candidate (default) or the first "
                          "(the official rule)")
    fit.add_argument("--stop-at-score", type=common.fraction, default=None,
                     help="take the best candidate up to the first whose validation accuracy reaches this "
                          "fraction (the official library uses 0.8; default: no stop)")
    common.add_seed_option(fit, "the reply order shown to the judge and the candidate search")
    common.add_theta_option(fit)
    common.add_verdict_policy_option(fit)
    common.add_threads_option(fit, None, "128 for a local model on a GPU, else 16")
    common.add_quiet_option(fit)
    common.add_model_options(fit)
    common.add_cache_options(fit)
    fit.set_defaults(func=cmd_fit)

    judge = commands.add_parser("judge", help="judge one pair with a fitted artifact")
    judge.add_argument("artifact", help="artifact JSON written by synth fit")
    judge.add_argument("--pair", required=True, help='JSON file: {"context", "a", "b"} or a preference row')
    judge.add_argument("--compare-default", action="store_true", help="also show the non-personalized verdict")
    common.add_model_options(judge)
    common.add_cache_options(judge)
    judge.set_defaults(func=cmd_judge)

    persona = commands.add_parser("persona", help="print an artifact's persona or prompts (no model needed)")
    persona.add_argument("artifact", help="artifact JSON written by synth fit")
    persona.add_argument("--format", choices=["text", "judge-prompt", "generation-prompt", "statements"],
                         default="text", help="statements: one trait statement per line, the ones a visitor rates")
    persona.set_defaults(func=cmd_persona)

    theta = commands.add_parser("optimize-theta", help="optimise the persona-writing program Θ with MIPROv2")
    theta.add_argument("pairs", help="pairs of many users (each row with a user_id)")
    common.add_output_option(theta, "Θ program file to write")
    theta.add_argument("--teacher-model", help="model that proposes instructions (distil Θ from a larger model); "
                                               "same --api-base, --api-key, --device and --quantize as --model")
    theta.add_argument("--auto", choices=["light", "medium", "heavy"], default="light", help="MIPROv2's budget")
    theta.add_argument("--max-users", type=common.at_least(1), default=40, help="users sampled from PAIRS (default 40)")
    theta.add_argument("--theta-demos", type=common.at_least(0), default=2,
                       help="most few-shot demos MIPROv2 may give Θ (default 2; 0: instruction only)")
    common.add_theta_option(theta, "the Θ to start from")
    common.add_quick_option(theta)
    common.add_seed_option(theta, "the user sample, the splits and MIPROv2")
    common.add_threads_option(theta, 8, "8")
    common.add_model_options(theta)
    common.add_cache_options(theta)
    theta.set_defaults(func=cmd_optimize_theta)
