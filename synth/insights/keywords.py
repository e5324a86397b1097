"""Class-based TF-IDF keywords (as in BERTopic): what words set one cluster's statements apart from the others."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

# Words every persona uses; they would otherwise top the largest clusters' keyword lists.
PERSONA_STOP_WORDS = frozenset(
    {
        "user",
        "users",
        "person",
        "people",
        "individual",
        "prefers",
        "prefer",
        "preferred",
        "values",
        "value",
        "likes",
        "like",
        "wants",
        "want",
        "appreciates",
        "appreciate",
        "enjoys",
        "enjoy",
        "favors",
        "favor",
        "expects",
        "expect",
        "tends",
        "seems",
        "likely",
        "response",
        "responses",
        "answer",
        "answers",
        "assistant",
        "reply",
        "replies",
        "especially",
        "generally",
        "clearly",
        "consistently",
        "choices",
        "chosen",
        "selections",
        "past",
        "based",
        "judging",
        "situations",
        "time",
        "makes",
        "make",
        "does",
        "really",
        "just",
    }
)


def class_tfidf(
    documents_by_class: Sequence[Sequence[str]], max_per_class: int = 2_000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """c-TF-IDF weights of every term (unigrams and bigrams) in every class: a (classes, terms) array, and the terms.

    Statements are counted one by one (so no bigram spans two statements), then summed per class. A class with more
    than `max_per_class` statements is counted on a seeded sample of that many: term frequencies are shares, which a
    sample of a few thousand estimates well, and counting every statement of a large population costs minutes.
    Weight of term t in class c: tf(t, c) / |c| * log(1 + A / f(t)), with A the mean number of words per class and
    f(t) the frequency of t over all classes. Filler words of this population (terms found in more than half of at
    least four classes, e.g. "answers" or "helpful" when every persona says so) weigh nothing, whatever the stop-word
    list misses: a word every group uses sets none apart.
    """
    rng = np.random.default_rng(seed)
    documents_by_class = [
        group if len(group) <= max_per_class
        else [group[i] for i in np.sort(rng.choice(len(group), size=max_per_class, replace=False))]
        for group in documents_by_class
    ]
    documents = [document for group in documents_by_class for document in group]
    classes = np.repeat(
        np.arange(len(documents_by_class)), [len(group) for group in documents_by_class]
    )
    nothing = (np.zeros((len(documents_by_class), 0)), np.array([], dtype=object))
    if not documents:
        return nothing
    vectorizer = CountVectorizer(
        ngram_range=(1, 2),
        stop_words=sorted(ENGLISH_STOP_WORDS | PERSONA_STOP_WORDS),
        token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z'-]+\b",
        min_df=2 if len(documents) >= 20 else 1,
    )
    try:
        per_document = vectorizer.fit_transform(documents)
    except ValueError:  # nothing but stop words
        return nothing
    indicator = sparse.csr_matrix(
        (np.ones(len(documents)), (classes, np.arange(len(documents)))),
        shape=(len(documents_by_class), len(documents)),
    )
    counts = (indicator @ per_document).toarray().astype(np.float64)
    terms = vectorizer.get_feature_names_out()
    if len(documents_by_class) >= 4:
        filler = {term for term, classes in zip(terms, (counts > 0).sum(axis=0), strict=True)
                  if " " not in term and classes > len(documents_by_class) / 2}
        counts[:, [i for i, term in enumerate(terms) if filler & set(term.split())]] = 0
    words_per_class = counts.sum(axis=1, keepdims=True)
    term_frequency = counts / np.maximum(words_per_class, 1)
    average_words = words_per_class.mean()
    idf = np.log(1 + average_words / np.maximum(counts.sum(axis=0), 1))
    return term_frequency * idf, terms


def class_tfidf_keywords(
    documents_by_class: Sequence[Sequence[str]], top_n: int = 6, max_per_class: int = 2_000, seed: int = 0
) -> list[list[str]]:
    """Top `top_n` c-TF-IDF terms (`class_tfidf`) for each class of documents; a unigram already inside a chosen
    bigram is skipped."""
    scores, terms = class_tfidf(documents_by_class, max_per_class, seed)
    keywords: list[list[str]] = []
    for row in scores:
        chosen: list[str] = []
        for index in np.argsort(-row):
            if row[index] <= 0 or len(chosen) == top_n:
                break
            term = terms[index]
            if any(term in other.split() for other in chosen if " " in other):
                continue
            if " " in term:
                chosen = [other for other in chosen if other not in term.split()]
            chosen.append(term)
        keywords.append(chosen)
    return keywords


def merge_by_vocabulary(
    labels: np.ndarray, texts: Sequence[str], min_similarity: float, max_per_class: int = 500, seed: int = 0
) -> np.ndarray:
    """Join clusters whose c-TF-IDF vectors have a cosine of at least `min_similarity` (and, transitively, their
    chains), as BERTopic reduces topics: clusters that the same distinctive words set apart are wordings of one
    trait (e.g. one per bold label a model chose for it), not two traits. `labels[i]` is `texts[i]`'s cluster, -1
    noise; returns the joined labels (each group takes its smallest member label)."""
    ids = np.unique(labels[labels >= 0])
    if len(ids) < 2:
        return labels
    clustered = np.flatnonzero(labels >= 0)
    local = np.searchsorted(ids, labels[clustered])
    members = np.split(clustered[np.argsort(local, kind="stable")], np.cumsum(np.bincount(local))[:-1])
    scores, _ = class_tfidf([[texts[i] for i in group] for group in members], max_per_class, seed)
    unit = scores / np.maximum(np.linalg.norm(scores, axis=1, keepdims=True), 1e-12)
    similar = unit @ unit.T >= min_similarity
    np.fill_diagonal(similar, False)
    _, component = connected_components(sparse.csr_matrix(similar), directed=False)
    first_of_component = np.full(component.max() + 1, len(ids))
    np.minimum.at(first_of_component, component, np.arange(len(ids)))
    joined = labels.copy()
    joined[clustered] = ids[first_of_component[component[local]]]
    return joined
