"""``synth``: fit, judge, evaluate and inspect personalized judges from the command line.

One module per command family (``fit``: fit, judge, persona, optimize-theta; ``generate``; ``evaluate``: eval,
eval-scaling; ``insights``; ``app``), each with ``register(commands)``; the options they share, and what each means,
are in ``synth.cli.common``. Commands render the engine's events and results; none of them contains method logic.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from synth.cli import app, evaluate, fit, generate, insights, prepare
from synth.cli.common import EXIT_BAD_INPUT, EXIT_FAILED
from synth.data import DataFileError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synth", description="SynthesizeMe: personalized LLM judges from a "
                                                                "handful of pairwise preferences.",
                                     epilog="Every flag means the same in every command; see docs/cli.md.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    for family in (fit, generate, evaluate, insights, app, prepare):
        family.register(commands)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; bad input and failures become a one-line error and an exit code."""
    try:
        return args.func(args)
    except DataFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(build_parser().parse_args(argv))
