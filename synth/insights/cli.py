"""`synth insights personas.jsonl --json insights.json [--html report.html]`.

Inputs are personas JSONL files (`user_id`, `persona` per line) and/or saved SynthesizeMe artifact JSON files.
Bad input exits with status 2 and a message naming the file, line and field; outputs are written only after the
whole analysis succeeded, each atomically (temporary file + rename).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synth.data import atomic_write_text
from synth.insights.embedding import CachedEmbedder, SentenceTransformerEmbedder
from synth.insights.naming import LLMNamer
from synth.insights.pipeline import PopulationInsights
from synth.insights.report import html_report, ranked_line
from synth.insights.splitting import LLMFacetExtractor
from synth.insights.types import Persona
from synth.population import PopulationFileError, read_artifact, read_personas_jsonl


def read_inputs(paths: Sequence[str | Path]) -> list[Persona]:
    """Read JSONL persona files and artifact JSON files; a user id may appear only once over all inputs."""
    personas: list[Persona] = []
    seen: dict[str, Path] = {}
    for raw_path in paths:
        path = Path(raw_path)
        found = (
            [read_artifact(path)[0]]
            if path.suffix.lower() == ".json"
            else read_personas_jsonl(path)
        )
        for persona in found:
            if persona.user_id in seen:
                raise PopulationFileError(
                    f"{path}: field 'user_id' repeats {persona.user_id!r} already read from {seen[persona.user_id]}"
                )
            seen[persona.user_id] = path
            personas.append(persona)
    return personas


def _build_pipeline(args: argparse.Namespace) -> PopulationInsights:
    lm: Any = None
    if args.lm:
        import dspy

        lm = dspy.LM(args.lm)
    return PopulationInsights(
        splitter=LLMFacetExtractor(lm) if lm is not None and args.llm_facets else None,
        embedder=CachedEmbedder(
            SentenceTransformerEmbedder(args.embedding_model), args.cache_dir
        ),
        namer=LLMNamer(lm) if lm is not None else None,
        theme_namer=LLMNamer(lm) if lm is not None else None,
        min_users=args.min_users,
        n_resamples=args.resamples,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    try:
        personas = read_inputs(args.personas)
    except PopulationFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.min_users < 1:
        print("error: --min-users must be at least 1", file=sys.stderr)
        return 2
    result = _build_pipeline(args).fit(personas)
    document = json.dumps(result.to_json(), indent=2, ensure_ascii=False)
    report = html_report(result) if args.html else None
    atomic_write_text(Path(args.json), document + "\n")
    if report is not None:
        atomic_write_text(Path(args.html), report)
    if not args.quiet:
        print(
            f"{result.n_users} users, {len(result.statements)} statements, {len(result.leaves)} insights"
        )
        for insight in result.leaves:
            print("  " + ranked_line(insight, result.n_users))
        print(
            f"hidden: {result.hidden_small_clusters} clusters with fewer than {args.min_users} users"
        )
        print(f"wrote {args.json}" + (f" and {args.html}" if args.html else ""))
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "personas",
        nargs="+",
        help="personas JSONL (user_id, persona) and/or artifact .json files",
    )
    parser.add_argument("--json", required=True, help="where to write insights.json")
    parser.add_argument("--html", help="also write a self-contained HTML report")
    parser.add_argument(
        "--min-users",
        type=int,
        default=5,
        help="privacy floor: hide clusters with fewer users",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--resamples",
        type=int,
        default=5,
        help="re-runs used for the stability score (0: skip)",
    )
    parser.add_argument(
        "--embedding-model",
        default=None,
        help="sentence-transformers id or path (default: packaged all-MiniLM-L6-v2)",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="embedding cache directory (default: ~/.cache/synth/embeddings)",
    )
    parser.add_argument(
        "--lm",
        default=None,
        help="LiteLLM model id for LLM names (e.g. openai/gpt-4o-mini)",
    )
    parser.add_argument(
        "--llm-facets",
        action="store_true",
        help="with --lm, also split personas into facets with the LLM",
    )
    parser.add_argument("--quiet", action="store_true")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `insights` command to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "insights",
        help="cluster many personas into named, counted insights",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="synth insights", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
