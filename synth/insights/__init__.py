"""Population insights: cluster trait statements from many personas into named, counted, stable insights.

    from synth.insights import PopulationInsights, read_personas_jsonl
    result = PopulationInsights().fit(read_personas_jsonl("personas.jsonl"))
    result.to_json()                                 # the insights.json schema

Modules: `pipeline` (the estimator and its stages), its swappable parts (`splitting`, `embedding`, `parts`,
`naming`, `keywords`), `types` (what flows through), `personas` (persona files), `population` (the studio's
population and shared fit), `report` (map and HTML), and for measuring quality `synthetic` (populations with planted
traits), `generators` (held-out populations in other formats and wording) and `recovery` (how many of them a result
recovers).

Names are imported lazily, so light modules (e.g. `synth.insights.types`, used by the persona store) do not pull
in DSPy, scikit-learn or sentence-transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "AnchoredTSNEProjector": "synth.insights.parts",
    "CachedEmbedder": "synth.insights.embedding",
    "CentralStatementNamer": "synth.insights.naming",
    "ChildNamesThemeNamer": "synth.insights.naming",
    "CompleteLinkageClusterer": "synth.insights.parts",
    "FitCache": "synth.insights.population",
    "HDBSCANClusterer": "synth.insights.parts",
    "Insight": "synth.insights.types",
    "InsightsResult": "synth.insights.types",
    "KMeansClusterer": "synth.insights.parts",
    "LLMFacetExtractor": "synth.insights.splitting",
    "LLMNamer": "synth.insights.naming",
    "PCAProjector": "synth.insights.parts",
    "PCAReducer": "synth.insights.parts",
    "Persona": "synth.insights.types",
    "PersonaFileError": "synth.insights.personas",
    "Placement": "synth.insights.types",
    "Population": "synth.insights.population",
    "PopulationInsights": "synth.insights.pipeline",
    "PrecomputedEmbedder": "synth.insights.embedding",
    "SentenceSplitter": "synth.insights.splitting",
    "SentenceTransformerEmbedder": "synth.insights.embedding",
    "SharedNeighborLouvain": "synth.insights.parts",
    "Statement": "synth.insights.types",
    "UMAPReducer": "synth.insights.parts",
    "class_tfidf_keywords": "synth.insights.keywords",
    "generate_population": "synth.insights.synthetic",
    "persona_statements": "synth.insights.splitting",
    "read_artifact": "synth.insights.personas",
    "read_personas_jsonl": "synth.insights.personas",
    "trait_core": "synth.insights.splitting",
    "write_personas_jsonl": "synth.insights.personas",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'synth.insights' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
