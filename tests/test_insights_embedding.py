"""synth.insights.embedding: the on-disk embedding cache."""

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
