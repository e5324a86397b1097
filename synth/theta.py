"""Θ, the persona-writing program: a small DSPy module saved as a file, loadable, optimisable once with MIPROv2.

The paper optimises Θ once (on PRISM) and reuses it across users and models; a Θ written by a larger model can
be "distilled" into a smaller one by running its instructions there. A Θ file is what ``dspy.Module.save`` writes;
its id is a short hash of that file, recorded in every artifact so results say which Θ made them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import dspy

from synth.paths import asset_path
from synth.signatures import WritePersona

DEFAULT_THETA_PATH = asset_path("theta_default.json")


class PersonaWriter(dspy.Module):
    """Turns notes on a person's validated choices into a short natural-language persona."""

    def __init__(self):
        super().__init__()
        self.write = dspy.Predict(WritePersona)

    def forward(self, preference_notes: str, config: dict | None = None) -> dspy.Prediction:
        return self.write(preference_notes=preference_notes, config=config or {})


def theta_id(path: str | Path) -> str:
    return "theta-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def load_theta(path: str | Path | None = None) -> tuple[PersonaWriter, str]:
    """Load a saved Θ (default: the bundled one) and return it with its id."""
    path = Path(path) if path else DEFAULT_THETA_PATH
    if not path.exists():
        raise FileNotFoundError(f"{path}: Θ program file not found")
    writer = PersonaWriter()
    try:
        writer.load(str(path))
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a saved persona-writing program ({exc})") from None
    return writer, theta_id(path)


def save_theta(writer: PersonaWriter, path: str | Path) -> str:
    """Save atomically; return the new Θ id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as staging:
        staged = Path(staging) / path.name
        writer.save(str(staged))
        staged.replace(path)
    return theta_id(path)


def theta_instructions(writer: PersonaWriter) -> str:
    return writer.write.signature.instructions
