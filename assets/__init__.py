"""Data files shipped inside the package as ``synth.assets`` (the top-level ``assets/`` folder of the checkout).

Everything that reads a bundled file goes through :func:`asset_path`, so an installed wheel finds the same files
as a checkout.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path


def asset_path(name: str) -> Path:
    """Path of a bundled data file, e.g. ``asset_path("example_pairs.jsonl")``."""
    resource = files(__name__) / name
    if not resource.is_file():
        raise FileNotFoundError(f"{name}: not a bundled asset of synth")
    with as_file(resource) as path:  # a real file for wheels and checkouts alike (no zip imports here)
        return Path(path)
