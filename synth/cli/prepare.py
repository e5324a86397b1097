"""``synth prepare``: make a local model ready before the first start (``scripts/setup.sh`` runs it).

The packaged offline model is a GGUF file that is de-quantized to safetensors the first time it loads, which takes
minutes on a small CPU; done here, the app's first start is as fast as any later one. A Hugging Face id is
downloaded into the Hub's cache. A remote model has nothing to prepare.
"""

from __future__ import annotations

import argparse

from synth.cli import common


def cmd_prepare(args: argparse.Namespace) -> int:
    from synth.lm import resolve_spec
    from synth.lm.loading import LocalModel

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    common.use_cache_dir(args)
    spec = resolve_spec(args.model)
    if not spec.startswith("local:"):
        say(f"{spec} is a remote model: nothing to prepare")
        return common.EXIT_OK
    model = LocalModel(spec.removeprefix("local:"), device=args.device)
    directory = model.weights_directory(progress=say)
    say(f"loading {model.display_name} to check it ...")
    model.load()
    say(f"ready: {model.display_name} on {model.device} in {model.precision}, "
        f"loaded in {model.load_seconds:.1f} s from {directory}")
    return common.EXIT_OK


def register(commands) -> None:
    """Add ``prepare`` to the ``synth`` sub-command parser."""
    prepare = commands.add_parser("prepare", help="convert and cache a local model now, so the first start is fast "
                                                  "(model: $SYNTH_MODEL, else offline)")
    common.add_model_options(prepare, remote=False, quantize=None)
    common.add_cache_options(prepare, responses=False)
    common.add_quiet_option(prepare)
    prepare.set_defaults(func=cmd_prepare)
