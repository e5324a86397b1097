"""``synth generate``: one prompt answered with and without a fitted persona, to see what the persona changes."""

from __future__ import annotations

import argparse

from synth.cli import common


def cmd_generate(args: argparse.Namespace) -> int:
    from synth.generate import answer_with_and_without
    from synth.pipeline import SynthesizeMe

    model = SynthesizeMe.load(args.artifact)
    lm = common.build_lm_from(args)
    *_, answers = answer_with_and_without(lm, model, args.prompt, max_tokens=args.max_tokens)
    print("Without the persona (no system prompt):")
    print(answers.without_persona or "(empty)")
    print("\nWith the persona (its generation prompt as the system prompt):")
    print(answers.with_persona or "(empty)")
    return common.EXIT_OK


def register(commands) -> None:
    """Add ``generate`` to the ``synth`` sub-command parser."""
    from synth.generate import MAX_ANSWER_TOKENS

    generate = commands.add_parser("generate", help="answer a prompt with and without an artifact's persona")
    generate.add_argument("artifact", help="artifact JSON written by synth fit")
    generate.add_argument("--prompt", required=True, help="what to ask the model")
    generate.add_argument("--max-tokens", type=common.at_least(1), default=256,
                          help=f"longest answer, in tokens (default 256; more than {MAX_ANSWER_TOKENS} is clamped)")
    common.add_model_options(generate)
    common.add_cache_options(generate)
    generate.set_defaults(func=cmd_generate)
