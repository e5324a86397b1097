"""SynthesizeMe Studio: personalized LLM judges (persona + demos) from a handful of pairwise preferences.

Ryan et al., "SynthesizeMe! Inducing Persona-Guided Prompts for Personalized Reward Models in LLMs", ACL 2025.
"""

from synth.artifacts import ArtifactError, ArtifactLimits
from synth.data import PairFileError, PreferencePair, Turn, load_pairs, save_pairs
from synth.lm import build_lm
from synth.metrics import Accuracy
from synth.pipeline import DefaultJudge, SynthesizeMe

__all__ = [
    "Accuracy",
    "ArtifactError",
    "ArtifactLimits",
    "DefaultJudge",
    "PairFileError",
    "PreferencePair",
    "SynthesizeMe",
    "Turn",
    "build_lm",
    "load_pairs",
    "save_pairs",
]
