"""synth.insights.keywords: c-TF-IDF keywords per group of statements."""

from __future__ import annotations

import numpy as np

from synth.insights import class_tfidf_keywords
from synth.insights.keywords import merge_by_vocabulary


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


def test_words_most_groups_use_are_never_keywords() -> None:
    groups = [
        [f"wants helpful answers about {topic}", f"helpful guidance on {topic} please"]
        for topic in ("gardening", "chess", "beekeeping", "photography", "cycling")
    ]
    keywords = class_tfidf_keywords(groups, top_n=3)
    assert all("helpful" not in " ".join(words) and "guidance" not in " ".join(words) for words in keywords)
    assert [words[0] for words in keywords] == ["gardening", "chess", "beekeeping", "photography", "cycling"]


def test_a_large_class_is_counted_on_a_seeded_sample_with_the_same_keywords() -> None:
    groups = [
        [f"keeps bees on the roof, hive {i}" for i in range(300)] + ["plays chess"] * 10,
        ["plays chess online at night", "studies chess openings"],
    ]
    sampled = class_tfidf_keywords(groups, top_n=2, max_per_class=50)
    assert sampled == class_tfidf_keywords(groups, top_n=2, max_per_class=50)
    assert sampled[0][0] == "bees roof" and "chess" in sampled[1][0]


def test_clusters_set_apart_by_the_same_words_are_joined() -> None:
    texts = ["Honeybees: keeps two hives", "Honeybees: jars honey in summer", "Apiary Hobby: keeps two hives",
             "Apiary Hobby: jars honey in summer", "Chess: plays online chess daily", "Chess: studies endgames",
             "Knits a scarf"]
    labels = np.array([0, 0, 1, 1, 2, 2, -1])
    assert merge_by_vocabulary(labels, texts, 0.3).tolist() == [0, 0, 0, 0, 2, 2, -1]
    assert merge_by_vocabulary(labels, texts, 0.99).tolist() == labels.tolist()
    assert merge_by_vocabulary(np.array([0, -1]), texts[:2], 0.3).tolist() == [0, -1]
