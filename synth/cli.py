"""``synth``: fit, judge and inspect personalized judges from the command line.

Each command renders the engine's events; none of them contains method logic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from synth.data import PairFileError, PreferencePair, load_pairs

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="offline (packaged Gemma 3 270M, default), llama-3.2-3b, local:<hf id|dir|.gguf>, "
                             "or a LiteLLM id such as openai/gpt-4o-mini")
    parser.add_argument("--api-base", default=None, help="OpenAI-compatible server URL (vLLM, Ollama...)")
    parser.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU), cuda, mps or cpu")
    parser.add_argument("--cache-dir", default=None, help="DSPy response cache (default $SYNTH_CACHE_DIR/dspy)")
    parser.add_argument("--no-cache", action="store_true", help="always call the model, never reuse cached answers")


def _build_lm(args: argparse.Namespace):
    from synth.lm import build_lm

    return build_lm(args.model, api_base=args.api_base, device=args.device, cache=not args.no_cache)


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

        if isinstance(event, ev.StageStarted):
            self._close()
            self.bar = self._tqdm(total=event.total_steps, desc=event.stage.title, file=self.stream, leave=True,
                                  bar_format="{desc}: {n_fmt} steps [{elapsed}] {postfix}")
        elif isinstance(event, ev.TraceBootstrapped):
            mark = "kept" if event.kept else "rejected"
            self._write(f"  pair {event.pair_index + 1}: judge said {event.verdict}, user chose "
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


def print_summary(artifact: dict, out=None) -> None:
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
          f"{artifact['timings']['total']:.0f}s | verdict fallbacks: {artifact['verdict_fallbacks']}", file=out)


def cmd_fit(args: argparse.Namespace) -> int:
    from synth.pipeline import SynthesizeMe

    pairs = load_pairs(args.pairs)
    val_pairs = load_pairs(args.val) if args.val else None
    model = SynthesizeMe(lm=_build_lm(args), num_candidates=args.num_candidates, max_demos=args.max_demos,
                         seed=args.seed, theta=args.theta, quick=args.quick, cache_dir=args.cache_dir,
                         num_threads=args.threads)
    model.fit(pairs, val_pairs=val_pairs, callback=ProgressView(verbose=not args.quiet))
    model.save(args.output)
    print_summary(model.artifact_)
    print(f"\nSaved {args.output}")
    return EXIT_OK


def _read_pair_file(path: str) -> PreferencePair | tuple:
    """A pair to judge: a full preference row, or {context, a, b} with no labels."""
    try:
        row = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise PairFileError(path, None, None, f"cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise PairFileError(path, exc.lineno, None, f"not valid JSON ({exc.msg})") from None
    if isinstance(row, dict) and {"a", "b"} <= row.keys():
        for name in ("context", "a", "b"):
            if not row.get(name):
                raise PairFileError(path, 1, name, "missing or empty")
        return row["context"], row["a"], row["b"]
    pair = PreferencePair.from_dict(row, path=path, line=1)
    return pair.context, pair.chosen, pair.rejected


def cmd_judge(args: argparse.Namespace) -> int:
    from synth.pipeline import DefaultJudge, SynthesizeMe

    context, a, b = _read_pair_file(args.pair)
    lm = _build_lm(args)
    model = SynthesizeMe.load(args.artifact, lm=lm)
    p_personal = model.predict_proba(context, a, b)
    print(f"Personalized judge: {'A' if p_personal >= 0.5 else 'B'} preferred (P(A) = {p_personal:.2f})")
    if args.compare_default:
        p_default = DefaultJudge(lm=lm).predict_proba(context, a, b)
        print(f"Default judge:      {'A' if p_default >= 0.5 else 'B'} preferred (P(A) = {p_default:.2f})")
    return EXIT_OK


def cmd_persona(args: argparse.Namespace) -> int:
    from synth.pipeline import SynthesizeMe

    model = SynthesizeMe.load(args.artifact)
    if args.format == "judge-prompt":
        print(json.dumps(model.get_llm_judge_prompt(), ensure_ascii=False, indent=2))
    elif args.format == "generation-prompt":
        print(model.get_generation_prompt())
    else:
        print(model.get_persona())
    return EXIT_OK


def cmd_optimize_theta(args: argparse.Namespace) -> int:
    from synth.optimize import optimize_theta

    pairs = load_pairs(args.pairs)
    teacher = None
    if args.teacher_model:
        from synth.lm import build_lm

        teacher = build_lm(args.teacher_model, api_base=args.api_base, device=args.device)
    result = optimize_theta(pairs, lm=_build_lm(args), prompt_lm=teacher, output=args.output, auto=args.auto,
                            max_users=args.max_users, seed=args.seed, quick=args.quick)
    print(f"Θ {result.theta_id} saved to {args.output}: mean validation accuracy {100 * result.baseline:.1f}% "
          f"with the starting Θ -> {100 * result.optimized:.1f}% with the new one ({result.n_users} users)")
    return EXIT_OK


def cmd_app(args: argparse.Namespace) -> int:
    import app

    app.main(server_name=args.host, server_port=args.port, share=args.share)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth", description="SynthesizeMe: personalized LLM judges from a "
                                                                "handful of pairwise preferences.")
    commands = parser.add_subparsers(dest="command", required=True)

    fit = commands.add_parser("fit", help="fit a personalized judge from preference pairs (JSONL or JSON)")
    fit.add_argument("pairs", help="preference pairs in the official format")
    fit.add_argument("-o", "--output", required=True, help="artifact JSON to write")
    fit.add_argument("--val", help="explicit validation pairs (default: last 30%% of PAIRS)")
    fit.add_argument("--quick", action="store_true", help="fewer candidates and shorter reasoning (minutes on CPU)")
    fit.add_argument("--num-candidates", type=int, default=10)
    fit.add_argument("--max-demos", type=int, default=4)
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--theta", help="persona-writing program (Θ) file; default: the bundled one")
    fit.add_argument("--threads", type=int, help="concurrent LM calls (default: 128 for a local model on a GPU, "
                     "else 16)")
    fit.add_argument("--quiet", action="store_true", help="no per-trace lines")
    _add_model_options(fit)
    fit.set_defaults(func=cmd_fit)

    judge = commands.add_parser("judge", help="judge one pair with a fitted artifact")
    judge.add_argument("artifact")
    judge.add_argument("--pair", required=True, help='JSON file: {"context", "a", "b"} or a preference row')
    judge.add_argument("--compare-default", action="store_true", help="also show the non-personalized verdict")
    _add_model_options(judge)
    judge.set_defaults(func=cmd_judge)

    persona = commands.add_parser("persona", help="print an artifact's persona or prompts")
    persona.add_argument("artifact")
    persona.add_argument("--format", choices=["text", "judge-prompt", "generation-prompt"], default="text")
    persona.set_defaults(func=cmd_persona)

    theta = commands.add_parser("optimize-theta", help="optimise the persona-writing prompt Θ with MIPROv2")
    theta.add_argument("pairs", help="pairs of many users (each row with user_id)")
    theta.add_argument("-o", "--output", required=True, help="Θ program file to write")
    theta.add_argument("--teacher-model", help="model that proposes instructions (distil Θ from a larger model)")
    theta.add_argument("--auto", choices=["light", "medium", "heavy"], default="light")
    theta.add_argument("--max-users", type=int, default=40)
    theta.add_argument("--seed", type=int, default=0)
    theta.add_argument("--quick", action="store_true")
    _add_model_options(theta)
    theta.set_defaults(func=cmd_optimize_theta)

    app_parser = commands.add_parser("app", help="start the Gradio studio")
    app_parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    app_parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    app_parser.add_argument("--share", action="store_true")
    app_parser.set_defaults(func=cmd_app)

    from synth.evaluation.cli import register as register_evaluation
    from synth.insights.cli import register as register_insights

    register_evaluation(commands)
    register_insights(commands)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; bad input and failures become a one-line error and an exit code."""
    try:
        return args.func(args)
    except PairFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
