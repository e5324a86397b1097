"""synth.insights.embedding: the on-disk embedding cache and precomputed embeddings files."""

from __future__ import annotations

import numpy as np
import pytest

from synth.insights.embedding import CachedEmbedder
from tests.insights_doubles import TOPICS, TopicEmbedder


def test_cached_embedder_embeds_each_text_once_across_calls(tmp_path):
    cached = CachedEmbedder(TopicEmbedder(TOPICS), cache_dir=tmp_path)
    first = cached.embed(["I cook", "I garden", "I cook"])
    assert (cached.hits, cached.misses) == (0, 2)
    later_run = CachedEmbedder(TopicEmbedder(TOPICS), cache_dir=tmp_path)
    np.testing.assert_array_equal(later_run.embed(["I garden", "I cook"]), first[[1, 0]])
    assert (later_run.hits, later_run.misses) == (2, 0)


def test_cached_embedder_rejects_an_embedder_that_drops_texts(tmp_path):
    class Dropping(TopicEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            return super().embed(texts)[:-1]

    with pytest.raises(ValueError, match="returned 1 vectors for 2 texts"):
        CachedEmbedder(Dropping(TOPICS), cache_dir=tmp_path).embed(["I cook", "I garden"])


def test_default_cache_lives_under_synth_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path))
    assert CachedEmbedder(TopicEmbedder(TOPICS)).cache_dir == tmp_path / "embeddings"


def _write_embeddings(path, texts, vectors) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": texts, "embedding": [list(map(float, v)) for v in vectors]}), path)


def test_precomputed_embeddings_are_looked_up_by_text_and_normalised(tmp_path) -> None:
    from synth.insights.embedding import PrecomputedEmbedder

    path = tmp_path / "embedded.parquet"
    _write_embeddings(path, ["likes tea", "plays chess", "likes tea"], [[3, 4], [0, 2], [9, 9]])
    embedder = PrecomputedEmbedder(path)
    assert embedder.model_id == "precomputed:embedded.parquet"
    assert np.allclose(embedder.embed(["plays chess", "likes tea"]), [[0, 1], [0.6, 0.8]])  # first row of a repeat


def test_precomputed_embeddings_errors_name_file_row_and_column(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from synth.insights.embedding import EmbeddingsFileError, PrecomputedEmbedder

    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"text": ["a b c"]}), missing)
    with pytest.raises(EmbeddingsFileError, match=r"missing.parquet, field 'embedding': missing column"):
        PrecomputedEmbedder(missing)
    ragged = tmp_path / "ragged.parquet"
    _write_embeddings(ragged, ["a", "b"], [[1, 2, 3], [1, 2]])
    with pytest.raises(EmbeddingsFileError, match=r"ragged.parquet, line 2, field 'embedding': has 2 values"):
        PrecomputedEmbedder(ragged)
    good = tmp_path / "good.parquet"
    _write_embeddings(good, ["a"], [[1, 0]])
    with pytest.raises(EmbeddingsFileError, match=r"1 of 2 texts to embed are not in the file, e.g. 'b'"):
        PrecomputedEmbedder(good).embed(["a", "b"])


def test_auto_precision_is_bf16_only_where_the_language_models_run_bf16(monkeypatch):
    """One test of the hardware for both: a CPU with AVX512-BF16 (an AMD EPYC of the Zen 5 kind) or AMX, unless
    oneDNN is limited below it (the AVX2 emulation), where bf16 weights would run emulated and several times slower."""
    import torch

    from synth.insights.embedding import SentenceTransformerEmbedder

    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert SentenceTransformerEmbedder()._uses_bf16()
    assert not SentenceTransformerEmbedder(device="cuda")._uses_bf16()
    assert not SentenceTransformerEmbedder(precision="float32")._uses_bf16()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert not SentenceTransformerEmbedder()._uses_bf16()
    assert SentenceTransformerEmbedder(precision="bfloat16")._uses_bf16()  # asked for by name: as asked
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)  # an AMD EPYC with AVX2 only
    assert not SentenceTransformerEmbedder()._uses_bf16()
