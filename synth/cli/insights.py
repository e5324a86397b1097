"""``synth insights personas.jsonl -o insights.json [--html report.html]``: many personas as named, counted insights.

Inputs are personas JSONL files (``user_id``, ``persona`` per line) and/or saved SynthesizeMe artifact JSON files.
Bad input exits with status 2 and a message naming the file, line and field; outputs are written only after the
whole analysis succeeded, each atomically (temporary file + rename). Insights are named from their members'
wording unless ``--model`` names an LM to write the names.

For large populations the embedding can run elsewhere: ``--export-texts -o texts.parquet`` writes the texts to embed,
another job (e.g. Ray Data on GPUs) adds an ``embedding`` column, and ``--embeddings embedded.parquet`` uses it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from synth.cli import common
from synth.data import atomic_write_text
from synth.insights.personas import PersonaFileError, read_artifact, read_personas_jsonl
from synth.insights.types import Persona


def read_inputs(paths: Sequence[str | Path]) -> list[Persona]:
    """Read JSONL persona files and artifact JSON files; a user id may appear only once over all inputs."""
    personas: list[Persona] = []
    seen: dict[str, Path] = {}
    for raw_path in paths:
        path = Path(raw_path)
        found = [read_artifact(path)[0]] if path.suffix.lower() == ".json" else read_personas_jsonl(path)
        for persona in found:
            if persona.user_id in seen:
                raise PersonaFileError(path, None, "user_id",
                                       f"repeats {persona.user_id!r} already read from {seen[persona.user_id]}")
            seen[persona.user_id] = path
            personas.append(persona)
    return personas


def _build_pipeline(args: argparse.Namespace):
    from synth.insights.embedding import CachedEmbedder, PrecomputedEmbedder, SentenceTransformerEmbedder
    from synth.insights.naming import LLMNamer
    from synth.insights.pipeline import PopulationInsights
    from synth.insights.splitting import LLMFacetExtractor
    from synth.paths import cache_dir

    if args.llm_facets and not args.model:
        raise ValueError("--llm-facets needs --model: the LM that splits personas into facets")
    common.use_cache_dir(args)
    if args.embeddings and args.embedding_model:
        raise ValueError("--embeddings and --embedding-model exclude each other: the file's vectors are the model's")
    lm = common.build_lm_from(args) if args.model else None
    if args.embeddings:
        embedder = PrecomputedEmbedder(args.embeddings)
    else:
        embedder = SentenceTransformerEmbedder(args.embedding_model)
        embedder = embedder if args.no_cache else CachedEmbedder(embedder, cache_dir("embeddings"))
    return PopulationInsights(
        splitter=LLMFacetExtractor(lm) if args.llm_facets else None,
        embedder=embedder,
        namer=LLMNamer(lm) if lm is not None else None,
        theme_namer=LLMNamer(lm) if lm is not None else None,
        min_users=args.min_users,
        n_resamples=args.resamples,
        seed=args.seed,
    )


def cmd_insights(args: argparse.Namespace) -> int:
    from synth.insights.report import html_report, ranked_line

    personas = read_inputs(args.personas)
    pipeline = _build_pipeline(args)
    if args.export_texts:
        from synth.insights.embedding import write_texts_to_embed

        texts = pipeline.texts_to_embed(personas)
        write_texts_to_embed(texts, args.output)
        if not args.quiet:
            print(f"wrote {len(texts)} texts to embed to {args.output} (column 'text'); add a column "
                  f"'embedding' and pass the file with --embeddings")
        return common.EXIT_OK
    result = pipeline.fit(personas)
    document = json.dumps(result.to_json(), indent=2, ensure_ascii=False)
    report = html_report(result) if args.html else None
    atomic_write_text(Path(args.output), document + "\n")
    if report is not None:
        atomic_write_text(Path(args.html), report)
    if not args.quiet:
        print(f"{result.n_users} users, {len(result.statements)} statements, {len(result.leaves)} insights")
        for insight in result.leaves:
            print("  " + ranked_line(insight, result.n_users))
        print(f"hidden: {result.hidden_small_clusters} clusters with fewer than {args.min_users} users")
        print(f"wrote {args.output}" + (f" and {args.html}" if args.html else ""))
    return common.EXIT_OK


def register(commands) -> None:
    """Add ``insights`` to the ``synth`` sub-command parser."""
    parser = commands.add_parser("insights", help="cluster many personas into named, counted insights",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("personas", nargs="+", help="personas JSONL (user_id, persona) and/or artifact .json files")
    common.add_output_option(parser, "insights JSON file to write (with --export-texts: the Parquet file of texts)")
    parser.add_argument("--embeddings", metavar="PARQUET",
                        help="precomputed statement embeddings: a Parquet file or folder with columns 'text' and "
                             "'embedding' (see docs/insights.md)")
    parser.add_argument("--export-texts", action="store_true",
                        help="write the texts to embed to -o as Parquet (column 'text') and stop")
    parser.add_argument("--html", help="also write a self-contained HTML report")
    parser.add_argument("--min-users", type=common.at_least(1), default=5,
                        help="privacy floor: hide clusters with fewer users (default 5)")
    common.add_seed_option(parser, "clustering, resampling and the map layout")
    parser.add_argument("--resamples", type=common.at_least(0), default=5,
                        help="re-runs used for the stability score (0: skip; default 5)")
    parser.add_argument("--embedding-model", default=None,
                        help="sentence-transformers id or path (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--llm-facets", action="store_true",
                        help="split personas into facets with the --model LM (which also names the insights)")
    common.add_quiet_option(parser)
    common.add_model_options(parser, "none: insights are named from their members' wording")
    common.add_cache_options(parser)
    parser.set_defaults(func=cmd_insights)
