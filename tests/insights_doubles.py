"""Test doubles for the insights tests: an embedder with one axis per topic word, and a small topic population."""

from __future__ import annotations

import hashlib

import numpy as np

from synth.insights import KMeansClusterer, PCAProjector, Persona, PopulationInsights
from synth.insights.embedding import words_of

TOPICS = ["cook", "privacy", "garden", "chess"]


class TopicEmbedder:
    """One axis per topic word (first match), plus small deterministic noise from the text hash."""

    model_id = "topic-test"

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            vector = np.zeros(len(self.topics) + 1 + 16, dtype=np.float32)
            hits = [i for i, topic in enumerate(self.topics) if topic in text.lower()]
            vector[hits[0] if hits else len(self.topics)] = 1.0
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            vector[len(self.topics) + 1 :] = np.random.default_rng(seed).normal(scale=0.03, size=16)
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows)


def topic_personas() -> list[Persona]:
    """8 cooks (one says it three ways), 6 privacy users, 6 gardeners, and 3 chess players (under the floor)."""
    personas = []
    for i in range(8):
        text = f"The user loves to cook pasta number {i}."
        if i == 0:
            text += " She likes to cook soup on Sundays. She wants to cook for friends every week."
        personas.append(Persona(f"cook-{i}", text))
    for i in range(6):
        text = f"He guards his privacy online, case {i}. He likes to cook rice dishes."
        personas.append(Persona(f"private-{i}", text))
    for i in range(6):
        personas.append(Persona(f"garden-{i}", f"This person tends a garden with roses, plot {i}."))
    for i in range(3):
        personas.append(Persona(f"chess-{i}", f"The user plays chess in the park, game {i}."))
    return personas


def topic_pipeline(**kwargs) -> PopulationInsights:
    """Fast and deterministic: topic embeddings, k-means with k = 4, PCA map. The privacy users share one cooking
    sentence verbatim (6 of 23 users), which the common-wording rule would set apart; these populations test other
    things, so the rule is off unless asked for."""
    kwargs.setdefault("common_share", None)
    return PopulationInsights(
        embedder=TopicEmbedder(TOPICS), clusterer=KMeansClusterer(n_clusters=4), projector=PCAProjector(), **kwargs
    )


class WordBagEmbedder:
    """The mean of one fixed random unit vector per word (seeded by the word), so words shared across traits pull
    statements together; `embed_ignoring` leaves the given words out of the mean, as a sentence-transformers model's
    masked pooling does. Records the ignored words it was asked to leave out."""

    model_id = "word-bag-test"

    def __init__(self) -> None:
        self.ignored_calls: list[frozenset[str]] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._pool(texts, frozenset())

    def embed_ignoring(self, texts: list[str], ignored_words) -> np.ndarray:
        self.ignored_calls.append(frozenset(ignored_words))
        return self._pool(texts, frozenset(ignored_words))

    @staticmethod
    def _pool(texts: list[str], ignored: frozenset[str]) -> np.ndarray:
        rows = []
        for text in texts:
            words = [word for word in words_of(text) if word not in ignored] or words_of(text)
            vectors = [np.random.default_rng(int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little"))
                       .normal(size=64) for word in words]
            mean = np.mean([vector / np.linalg.norm(vector) for vector in vectors], axis=0)
            rows.append(mean / np.linalg.norm(mean))
        return np.stack(rows).astype(np.float32)


HOBBIES = {"cook": ["pasta", "bread", "soup"], "garden": ["roses", "tulips", "herbs"], "chess": ["openings", "endgames",
           "puzzles"], "hike": ["trails", "summits", "ridges"], "bees": ["hives", "honey", "swarms"]}


def filler_personas(n_per_hobby: int = 8) -> list[Persona]:
    """Five hobbies, each statement naming its hobby twice and one of three objects, and ending with one of two
    tails that every hobby uses ("on every day", "at the weekend"): filler spread over all hobbies."""
    personas = []
    for hobby, objects in HOBBIES.items():
        for i in range(n_per_hobby):
            tail = "on every day" if i % 2 else "at the weekend"
            personas.append(Persona(f"{hobby}-{i}", f"The user loves {hobby} {objects[i % 3]} {hobby} {tail}."))
    return personas
