"""``synth app``: serve the studio (the Gradio app) from this installation."""

from __future__ import annotations

import argparse
import os

from synth.cli import common
from synth.lm import APP_QUANTIZE


def cmd_app(args: argparse.Namespace) -> int:
    from components.studio import main as serve_studio

    serve_studio(server_name=args.host, server_port=args.port, share=args.share,
                 lm_factory=lambda: common.build_lm_from(args))
    return common.EXIT_OK


def register(commands) -> None:
    """Add ``app`` to the ``synth`` sub-command parser."""
    app = commands.add_parser("app", help="start the Gradio studio (model: $SYNTH_MODEL, else offline)")
    app.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                     help="address to serve on (default $GRADIO_SERVER_NAME, else 127.0.0.1)")
    app.add_argument("--port", type=common.at_least(1), default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                     help="port (default $GRADIO_SERVER_PORT, else 7860)")
    app.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    common.add_model_options(app, quantize=APP_QUANTIZE)
    common.add_cache_options(app)
    app.set_defaults(func=cmd_app)
