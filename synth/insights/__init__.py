"""Population insights: cluster trait statements from many personas into named, counted, stable insights.

    from synth.insights import PopulationInsights
    result = PopulationInsights().fit(personas)      # personas: list[Persona]
    result.to_json()                                 # the insights.json schema

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
    "HDBSCANClusterer": "synth.insights.parts",
    "Insight": "synth.insights.types",
    "InsightsResult": "synth.insights.types",
    "KMeansClusterer": "synth.insights.parts",
    "LLMFacetExtractor": "synth.insights.splitting",
    "LLMNamer": "synth.insights.naming",
    "PCAProjector": "synth.insights.parts",
    "PCAReducer": "synth.insights.parts",
    "Persona": "synth.insights.types",
    "Placement": "synth.insights.types",
    "PopulationInsights": "synth.insights.pipeline",
    "SentenceSplitter": "synth.insights.splitting",
    "SentenceTransformerEmbedder": "synth.insights.embedding",
    "SharedNeighborLouvain": "synth.insights.parts",
    "Statement": "synth.insights.types",
    "class_tfidf_keywords": "synth.insights.keywords",
    "trait_core": "synth.insights.splitting",
}
__all__ = [
    "AnchoredTSNEProjector",
    "CachedEmbedder",
    "CentralStatementNamer",
    "ChildNamesThemeNamer",
    "HDBSCANClusterer",
    "Insight",
    "InsightsPipeline",
    "InsightsResult",
    "KMeansClusterer",
    "LLMFacetExtractor",
    "LLMNamer",
    "PCAProjector",
    "PCAReducer",
    "Persona",
    "Placement",
    "PopulationInsights",
    "SentenceSplitter",
    "SentenceTransformerEmbedder",
    "SharedNeighborLouvain",
    "Statement",
    "class_tfidf_keywords",
    "trait_core",
]


def __getattr__(name: str) -> Any:
    if (
        name == "InsightsPipeline"
    ):  # alias: the estimator is also a pipeline of swappable parts
        name = "PopulationInsights"
    if name not in _EXPORTS:
        raise AttributeError(f"module 'synth.insights' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
