"""synth.insights.keywords: c-TF-IDF keywords per group of statements."""

from __future__ import annotations

from synth.insights import class_tfidf_keywords


def test_class_tfidf_prefers_words_distinctive_for_a_class() -> None:
    keywords = class_tfidf_keywords(
        [
            ["cares about climate change", "wants climate friendly options", "worries about climate"],
            ["prefers short answers", "wants short replies", "short and direct"],
        ],
        top_n=2,
    )
    assert keywords[0][0].startswith("climate")
    assert "short" in keywords[1][0]
    assert not set(keywords[0]) & set(keywords[1])
