"""Filler words: words spread over many clusters of a first pass are left out of the embeddings' pooling, so shared
tails ("in everyday life") no longer pull statements of different traits together. Scripted word-bag embeddings
here; one slow test runs the packaged MiniLM's masked pooling."""

from __future__ import annotations

import numpy as np
import pytest

from synth.insights import (
    CachedEmbedder,
    PCAProjector,
    Persona,
    PopulationInsights,
    SentenceTransformerEmbedder,
    embedding,
)
from synth.insights.embedding import PrecomputedEmbedder, can_ignore_words, words_of
from tests.insights_doubles import HOBBIES, TOPICS, TopicEmbedder, WordBagEmbedder, filler_personas


def _fit(embedder, **kwargs) -> tuple[PopulationInsights, set[frozenset[str]]]:
    estimator = PopulationInsights(embedder=embedder, projector=PCAProjector(), n_resamples=0, **kwargs)
    result = estimator.fit(filler_personas())
    return estimator, {frozenset(user.split("-")[0] for user in leaf.user_ids) for leaf in result.leaves}


def test_words_spread_over_many_clusters_are_left_out_and_the_traits_come_apart() -> None:
    embedder = WordBagEmbedder()
    estimator, hobby_sets = _fit(embedder)
    assert estimator.filler_words_ == {"loves", "on", "every", "day", "at", "the", "weekend"}
    assert not estimator.filler_words_ & {*HOBBIES, *(o for objects in HOBBIES.values() for o in objects)}
    assert hobby_sets == {frozenset([hobby]) for hobby in HOBBIES}
    np.testing.assert_array_equal(estimator.embeddings_,
                                  WordBagEmbedder().embed_ignoring(estimator.cores_, estimator.filler_words_))
    assert estimator.result_.params["filler_words"] == sorted(estimator.filler_words_)
    assert estimator.result_.params["filler_share"] == 0.1

    # Without the rule the shared tails weigh as much as the hobbies, and hobbies merge.
    plain, plain_sets = _fit(WordBagEmbedder(), filler_share=None)
    assert plain.filler_words_ == frozenset() and plain.result_.params["filler_words"] == []
    assert plain_sets != hobby_sets


def test_a_new_persona_is_placed_with_the_same_words_left_out() -> None:
    embedder = WordBagEmbedder()
    estimator, _ = _fit(embedder)
    embedder.ignored_calls.clear()
    placement = estimator.place("The user loves chess endgames chess at the weekend.")
    assert embedder.ignored_calls == [estimator.filler_words_]
    assert "chess" in placement.nearest_insights[0].name.lower()


def test_a_word_in_fewer_than_three_clusters_is_no_filler_whatever_their_share() -> None:
    """Hikers say "outdoors": at most two clusters of a first pass of a dozen, more than a tenth of them, yet two
    clusters say little of spread."""
    personas = [Persona(p.user_id, p.text.replace(".", " outdoors.") if p.user_id.startswith("hike") else p.text)
                for p in filler_personas()]
    estimator = PopulationInsights(embedder=WordBagEmbedder(), projector=PCAProjector(), n_resamples=0)
    result = estimator.fit(personas)
    assert "outdoors" not in estimator.filler_words_ and "loves" in estimator.filler_words_
    assert len(result.leaves) == 5


def test_embedders_that_cannot_leave_words_out_embed_whole_texts(tmp_path) -> None:
    assert not can_ignore_words(TopicEmbedder(TOPICS))
    assert not can_ignore_words(CachedEmbedder(TopicEmbedder(TOPICS), tmp_path))
    assert can_ignore_words(CachedEmbedder(WordBagEmbedder(), tmp_path))
    assert can_ignore_words(SentenceTransformerEmbedder())  # nothing loads to tell
    assert not hasattr(PrecomputedEmbedder, "embed_ignoring")
    estimator = PopulationInsights(embedder=TopicEmbedder(["cook", "garden", "chess", "hike", "bees"]),
                                   projector=PCAProjector(), n_resamples=0)
    estimator.fit(filler_personas())
    assert estimator.filler_words_ == frozenset()
    with pytest.raises(ValueError, match="filler_share must be in"):
        PopulationInsights(embedder=WordBagEmbedder(), filler_share=0).fit(filler_personas())


def test_the_cache_keys_a_vector_by_its_text_and_the_ignored_words_it_holds(tmp_path) -> None:
    cached = CachedEmbedder(WordBagEmbedder(), tmp_path)
    plain = cached.embed(["cook pasta daily", "chess openings"])
    ignoring = cached.embed_ignoring(["cook pasta daily", "chess openings"], {"daily", "weekly"})
    assert (cached.hits, cached.misses) == (1, 3)  # "chess openings" holds no ignored word: the plain entry
    np.testing.assert_array_equal(ignoring[1], plain[1])
    np.testing.assert_array_equal(ignoring[0], WordBagEmbedder().embed(["cook pasta"])[0])
    cached.embed_ignoring(["cook pasta daily"], {"daily", "monthly"})  # the same ignored words held: a hit
    cached.embed_ignoring(["cook pasta daily"], {"daily", "pasta"})
    assert (cached.hits, cached.misses) == (2, 4)


def test_words_are_runs_of_letters_and_digits_and_single_punctuation_marks() -> None:
    assert words_of("Long-winded answers, in Everyday life: 24/7!") == [
        "long", "-", "winded", "answers", ",", "in", "everyday", "life", ":", "24", "/", "7", "!"]


@pytest.mark.slow
def test_minilm_leaves_ignored_words_out_of_its_mean_pooling(monkeypatch) -> None:
    embedder = SentenceTransformerEmbedder()
    texts = ["short answers in everyday life", "the and a", "tends a rose garden"]
    plain = embedder.embed(texts)
    ignoring = embedder.embed_ignoring(texts, {"in", "everyday", "life", "the", "and", "a"})
    monkeypatch.setattr(embedding, "MASKED_CHUNK", 1)  # one text's token vectors at a time: the same vectors
    np.testing.assert_allclose(embedder.embed_ignoring(texts, {"in", "everyday", "life", "the", "and", "a"}),
                               ignoring, atol=1e-3)
    np.testing.assert_array_equal(embedder.embed_ignoring(texts, {"absent"}), plain)
    np.testing.assert_array_equal(ignoring[1], plain[1])  # every word ignored: the whole text
    np.testing.assert_allclose(np.linalg.norm(ignoring[[0, 2]], axis=1), 1.0, atol=1e-5)
    target = embedder.embed(["short answers"])[0]
    assert ignoring[0] @ target > plain[0] @ target + 0.05
    assert ignoring[2] @ plain[2] > 0.9  # "a" is one word of four: the garden stays a garden
