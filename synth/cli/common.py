"""The options synth's commands share. Each flag means one thing in every command that has it (docs/cli.md):

- ``--model``, ``--api-base``, ``--api-key``, ``--device``, ``--quantize``: the LM, as ``synth.lm.build_lm`` reads a
  spec (``--quantize`` defaults to none, so a seeded run repeats exactly, except in ``app``, where it is auto).
- ``--cache-dir``: the root of synth's caches (DSPy's responses, embeddings, converted model weights), the same as
  setting ``$SYNTH_CACHE_DIR``; ``--no-cache``: answers are computed afresh, never read from or written to a cache.
- ``--threads``: LM calls in flight at once (per user in ``eval``).
- ``--seed``: every random choice of the command.
- ``--quick``: SynthesizeMe's quick settings (a smaller search, shorter texts); explicit values still win.
- ``--theta``: a persona-writing program Θ file; ``--verdict-policy``: how the judge's verdicts are read.
- ``-o``/``--output``: where the command's result is written. ``--quiet``: no progress, only the result.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

MODEL_HELP = ("the LM: offline (packaged Gemma 3 270M, CPU), llama-3.2-3b, local:<hf id|dir|file.gguf>, or a "
              "LiteLLM id such as openai/gpt-4o-mini")


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] (e.g. 0.8 for the official 80), got {value}")
    return value


def add_model_options(parser: argparse.ArgumentParser, default_text: str = "$SYNTH_MODEL, else offline",
                      remote: bool = True, quantize: str | None = "none") -> None:
    """``remote=False`` for commands that only ever touch local models (no server to name); ``quantize`` is the
    default of ``--quantize`` (None: no such option, for commands that run no model)."""
    from synth.lm.loading import QUANTIZATIONS, QUANTIZE_HELP

    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None, help=f"{MODEL_HELP} (default: {default_text})")
    if remote:
        group.add_argument("--api-base", default=None,
                           help="URL of an OpenAI-compatible server (vLLM, Ollama...), e.g. http://host:8000/v1")
        group.add_argument("--api-key", default=None, help="key for --api-base or the provider (default: the "
                                                           "provider's environment variable, e.g. $OPENAI_API_KEY)")
    group.add_argument("--device", default="auto", help="for local models: auto (CUDA > MPS > CPU), cuda, mps or cpu")
    if quantize is not None:
        group.add_argument("--quantize", choices=QUANTIZATIONS, default=quantize,
                           help=f"for local models: {QUANTIZE_HELP} (default: {quantize})")


def add_cache_options(parser: argparse.ArgumentParser, responses: bool = True) -> None:
    """``responses=False`` for commands that cache no LM answers (``--no-cache`` would mean nothing there)."""
    group = parser.add_argument_group("caches")
    group.add_argument("--cache-dir", default=None,
                       help="root of synth's caches: DSPy responses, embeddings, converted models (same as "
                            "$SYNTH_CACHE_DIR; default ~/.cache/synth)")
    if responses:
        group.add_argument("--no-cache", action="store_true",
                           help="compute every answer afresh: never read or write cached LM responses (or "
                                "embeddings)")


def add_threads_option(parser: argparse.ArgumentParser, default: int | None, default_text: str) -> None:
    parser.add_argument("--threads", type=at_least(1), default=default,
                        help=f"LM calls in flight at once (default: {default_text})")


def add_seed_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--seed", type=int, default=0, help=f"seed of {what} (default 0)")


def add_quick_option(parser: argparse.ArgumentParser) -> None:
    from synth.steps import QUICK, StepSettings

    full = StepSettings()
    changes = ", ".join(f"{name.replace('_', ' ')} {value} instead of {getattr(full, name)}"
                        for name, value in QUICK.items())
    parser.add_argument("--quick", action="store_true",
                        help=f"SynthesizeMe's quick settings: {changes} (values given explicitly still win)")


def add_theta_option(parser: argparse.ArgumentParser, what: str = "the persona-writing program Θ") -> None:
    parser.add_argument("--theta", default=None, help=f"a Θ file written by optimize-theta: {what} (default: the "
                                                      "bundled one)")


def add_verdict_policy_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verdict-policy", choices=["probabilities", "parse", "official"], default=None,
                        help="how verdicts are read: probabilities (next-token, local models), parse (re-sampled, "
                             "then a recorded fallback), official (parsed once, a tie if unclear); default: "
                             "probabilities for local models, parse for remote ones")


def add_output_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("-o", "--output", required=True, help=what)


def add_quiet_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress lines or bars, only the result")


def use_cache_dir(args: argparse.Namespace) -> None:
    """``--cache-dir`` is ``$SYNTH_CACHE_DIR`` for this process: every cache (``synth.paths.cache_dir``) moves."""
    if args.cache_dir:
        os.environ["SYNTH_CACHE_DIR"] = str(Path(args.cache_dir).expanduser().resolve())


def lm_options(args: argparse.Namespace, spec: str | None = None) -> dict[str, Any]:
    """``synth.lm.build_lm`` keyword arguments from the model and cache options (``spec`` replaces ``--model``);
    plain values, so a Ray worker can build the same LM."""
    return {"spec": spec or args.model, "api_base": args.api_base, "api_key": args.api_key, "device": args.device,
            "quantize": args.quantize, "cache": not args.no_cache}


def build_lm_from(args: argparse.Namespace, spec: str | None = None):
    """The LM the options name, with DSPy's response cache under ``--cache-dir`` unless ``--no-cache``."""
    from synth.lm import build_lm, configure_cache

    use_cache_dir(args)
    if not args.no_cache:
        configure_cache()
    return build_lm(**lm_options(args, spec))
