"""Where synth keeps files on disk: one place that reads ``$SYNTH_CACHE_DIR`` and ``$SYNTH_DATA_DIR``."""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """Re-creatable files (converted model weights, DSPy's responses, embeddings): ``$SYNTH_CACHE_DIR``, else
    ``~/.cache/synth``; ``parts`` name a subfolder, e.g. ``cache_dir("embeddings")``."""
    root = os.environ.get("SYNTH_CACHE_DIR") or Path.home() / ".cache" / "synth"
    return Path(root).joinpath(*parts)


def data_dir(*parts: str) -> Path:
    """Files worth keeping (the app's persona store): ``$SYNTH_DATA_DIR``, else ``/data/synth`` on a Hugging Face
    Space with persistent storage, else ``~/.local/share/synth``."""
    root = os.environ.get("SYNTH_DATA_DIR")
    if not root:
        root = "/data/synth" if Path("/data").is_dir() and os.access("/data", os.W_OK) else (
            Path.home() / ".local" / "share" / "synth")
    return Path(root).joinpath(*parts)


def asset_path(name: str) -> Path:
    """Path of a bundled data file, e.g. ``asset_path("example_pairs.jsonl")``.

    An installed copy ships the checkout's ``assets/`` folder as the package ``synth.assets``; a checkout that runs
    without being installed (a Hugging Face Space runs ``python app.py`` so) reads the folder itself.
    """
    try:
        root = Path(str(files("synth.assets")))
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parent.parent / "assets"
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(f"{name}: not a bundled asset of synth (looked in {root})")
    return path
