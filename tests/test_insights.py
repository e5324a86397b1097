"""Population insights: splitting, counting, privacy floor, stability, placement, naming, importers, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from dspy.utils import DummyLM

from synth.insights import (
    LLMFacetExtractor,
    LLMNamer,
    Persona,
    PopulationInsights,
    SentenceSplitter,
    class_tfidf_keywords,
    trait_core,
)
from synth.insights.cli import main as insights_main
from synth.insights.cli import register
from synth.insights.embedding import CachedEmbedder
from synth.insights.naming import CentralStatementNamer, GroupToName
from synth.insights.parts import KMeansClusterer, PCAProjector
from synth.population import (
    PLANTED_TRAITS,
    PopulationFileError,
    generate_population,
    planted_trait_recovery,
    read_artifact,
    read_personas_jsonl,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class TopicEmbedder:
    """Test double: one axis per topic word (first match), plus small deterministic noise from the text hash."""

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
            vector[len(self.topics) + 1 :] = np.random.default_rng(seed).normal(
                scale=0.03, size=16
            )
            rows.append(vector / np.linalg.norm(vector))
        return np.stack(rows)


TOPICS = ["cook", "privacy", "garden", "chess"]


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


# The documented schema of one entry of insights.json (issue: CLI JSON schema).
INSIGHT_KEYS = {"id", "name", "description", "keywords", "n_users", "user_ids", "statements", "stability", "parent"}


def topic_personas() -> list[Persona]:
    """8 cooks (one says it three ways), 6 privacy users, 6 gardeners, and 3 chess players (under the floor)."""
    personas = []
    for i in range(8):
        text = f"The user loves to cook pasta number {i}."
        if i == 0:
            text += " She likes to cook soup on Sundays. She wants to cook for friends every week."
        personas.append(Persona(f"cook-{i}", text))
    for i in range(6):
        personas.append(
            Persona(
                f"private-{i}",
                f"He guards his privacy online, case {i}. He likes to cook rice dishes.",
            )
        )
    for i in range(6):
        personas.append(
            Persona(f"garden-{i}", f"This person tends a garden with roses, plot {i}.")
        )
    for i in range(3):
        personas.append(
            Persona(f"chess-{i}", f"The user plays chess in the park, game {i}.")
        )
    return personas


def topic_pipeline(**kwargs) -> PopulationInsights:
    return PopulationInsights(
        embedder=TopicEmbedder(TOPICS),
        clusterer=KMeansClusterer(n_clusters=4),
        projector=PCAProjector(),
        **kwargs,
    )


# ---------------------------------------------------------------- splitting


def test_splitter_separates_sentences_bullets_and_independent_clauses() -> None:
    persona = (
        "The user prefers concise answers, e.g. short lists. She runs a small bakery, and she wants practical tips; "
        "she dislikes jargon.\n- Likes cooking and baking\n2) Visits St. Louis often! Ok."
    )
    assert SentenceSplitter().split(persona) == [
        "The user prefers concise answers, e.g. short lists.",
        "She runs a small bakery.",
        "She wants practical tips.",
        "She dislikes jargon.",
        "Likes cooking and baking.",
        "Visits St. Louis often!",
    ]


def test_splitter_keeps_short_coordinations_and_drops_repeats() -> None:
    splitter = SentenceSplitter()
    assert splitter.split("She likes tea, and coffee. She likes tea, and coffee.") == [
        "She likes tea, and coffee."
    ]
    assert splitter.split("Additionally, they enjoy humor in answers.") == [
        "They enjoy humor in answers."
    ]


def test_trait_core_strips_boilerplate_but_keeps_negation() -> None:
    assert (
        trait_core("Judging by the choices, this person appreciates tables.")
        == "tables"
    )
    assert trait_core(
        "He values brevity and dislikes long-winded responses, based on past choices."
    ) == ("brevity and dislikes long-winded responses")
    assert trait_core("She dislikes slang.") == "dislikes slang"
    assert (
        trait_core("A caring voice matters to her.")
        == "A caring voice matters to their"
    )


def test_llm_facet_extractor_uses_the_model_and_falls_back_when_empty() -> None:
    persona = "The user is a nurse. She wants short answers."
    lm = DummyLM(
        [
            {
                "statements": '["The user works as a nurse.", "The user wants short answers."]'
            }
        ]
    )
    assert LLMFacetExtractor(lm).split(persona) == [
        "The user works as a nurse.",
        "The user wants short answers.",
    ]
    empty = DummyLM([{"statements": "[]"}])
    assert LLMFacetExtractor(empty).split(persona) == SentenceSplitter().split(persona)


# ---------------------------------------------------------------- counting, privacy, stability


def test_insights_count_unique_users_and_hide_small_clusters() -> None:
    result = topic_pipeline(n_resamples=0).fit(topic_personas())
    by_topic = {
        next(t for t in TOPICS if t in insight.name.lower()): insight
        for insight in result.leaves
    }
    assert set(by_topic) == {"cook", "privacy", "garden"}
    cook = by_topic["cook"]
    # cook-0 has three cooking statements and the privacy users mention cooking too: 8 + 6 users, counted once each.
    assert cook.n_users == 14
    assert len(cook.statements) == 16
    assert len(set(cook.user_ids)) == cook.n_users
    assert by_topic["privacy"].n_users == 6
    # 3 chess players are under the floor of 5: hidden, counted, and their statements belong to no insight.
    assert result.hidden_small_clusters == 1
    chess = [s for s in result.statements if "chess" in s.text]
    assert len(chess) == 3 and all(s.insight_id is None for s in chess)
    assert [leaf.n_users for leaf in result.leaves] == sorted(
        (leaf.n_users for leaf in result.leaves), reverse=True
    )


def test_privacy_floor_is_configurable() -> None:
    result = topic_pipeline(n_resamples=0, min_users=3).fit(topic_personas())
    assert result.hidden_small_clusters == 0
    assert any("chess" in leaf.name.lower() for leaf in result.leaves)
    strict = topic_pipeline(n_resamples=0, min_users=7).fit(topic_personas())
    assert [leaf.n_users for leaf in strict.leaves] == [14]
    assert strict.hidden_small_clusters == 3


def test_clear_clusters_are_fully_stable_and_reproducible() -> None:
    first = topic_pipeline(n_resamples=3, seed=4).fit(topic_personas())
    assert all(leaf.stability == pytest.approx(1.0) for leaf in first.leaves)
    second = topic_pipeline(n_resamples=3, seed=4).fit(topic_personas())
    assert first.to_json()["insights"] == second.to_json()["insights"]
    assert first.statements == second.statements


def test_duplicate_user_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate user ids: a"):
        topic_pipeline().fit(
            [
                Persona("a", "The user likes to cook."),
                Persona("a", "The user likes chess."),
            ]
        )


def test_place_puts_new_statements_into_matching_insights() -> None:
    estimator = topic_pipeline(n_resamples=0)
    result = estimator.fit(topic_personas())
    placement = estimator.place(
        "She loves to cook pasta number 3. She reads poetry at night."
    )
    cook = next(leaf for leaf in result.leaves if "cook" in leaf.name.lower())
    assert [s.insight_id for s in placement.statements] == [cook.id, None]
    assert placement.nearest_insights[0].insight_id == cook.id
    assert placement.typicality == pytest.approx(cook.n_users / result.n_users / 2)
    assert 0 <= placement.typicality_percentile <= 100


def test_themes_group_insights_and_json_schema_is_exact() -> None:
    topics = ["cook", "bake", "grill", "privacy", "encrypt", "tracking"]
    personas = [
        Persona(f"{topic}-{i}", f"The user likes to {topic} things, variant {i}.")
        for topic in topics
        for i in range(5)
    ]

    class GroupedEmbedder(TopicEmbedder):
        """food topics share one direction, privacy topics another, so themes must form two groups."""

        def embed(self, texts: list[str]) -> np.ndarray:
            base = super().embed(texts)
            food, private = (
                base[:, :3].sum(axis=1, keepdims=True),
                base[:, 3:6].sum(axis=1, keepdims=True),
            )
            out = np.hstack([base[:, :6] * 0.6, food, private, base[:, 6:]])
            return out / np.linalg.norm(out, axis=1, keepdims=True)

    estimator = PopulationInsights(
        embedder=GroupedEmbedder(topics),
        clusterer=KMeansClusterer(6),
        projector=PCAProjector(),
        n_resamples=2,
    )
    result = estimator.fit(personas)
    assert len(result.leaves) == 6 and len(result.themes) == 2
    for theme in result.themes:
        child_topics = {
            next(t for t in topics if t in result.get(c).name.lower())
            for c in theme.children
        }
        assert child_topics in (
            {"cook", "bake", "grill"},
            {"privacy", "encrypt", "tracking"},
        )
        assert theme.n_users == 15
    document = json.loads(json.dumps(result.to_json()))
    assert set(document) == {"insights", "hidden_small_clusters", "params"}
    for item in document["insights"]:
        assert set(item) == INSIGHT_KEYS
        assert item["n_users"] == len(item["user_ids"])
        assert all(set(s) == {"user_id", "text"} for s in item["statements"])
    parents = {
        item["parent"]
        for item in document["insights"]
        if item["id"].startswith("insight-")
    }
    assert parents == {"theme-1", "theme-2"}


# ---------------------------------------------------------------- keywords and names


def test_class_tfidf_prefers_words_distinctive_for_a_class() -> None:
    keywords = class_tfidf_keywords(
        [
            [
                "cares about climate change",
                "wants climate friendly options",
                "worries about climate",
            ],
            ["prefers short answers", "wants short replies", "short and direct"],
        ],
        top_n=2,
    )
    assert keywords[0][0].startswith("climate")
    assert "short" in keywords[1][0]
    assert not set(keywords[0]) & set(keywords[1])


def test_central_statement_names_are_distinct() -> None:
    groups = [
        GroupToName(("The user likes tea.", "She drinks green tea."), ("tea",), (), 5),
        GroupToName(
            ("The user likes tea.", "He brews oolong tea daily."), ("oolong",), (), 5
        ),
    ]
    names = CentralStatementNamer().name(groups)
    assert names[0].name == "Likes tea"
    assert names[1].name == "Brews oolong tea daily"


def test_llm_namer_sees_contrast_and_deduplicates() -> None:
    lm = DummyLM(
        [
            {"name": "Tea lovers", "description": "Users who enjoy tea."},
            {"name": "Tea lovers", "description": "Repeated name."},
        ]
    )
    groups = [
        GroupToName(("Drinks green tea.",), ("green",), ("Drinks coffee.",), 9),
        GroupToName(("Brews oolong tea.",), ("oolong",), ("Drinks green tea.",), 4),
    ]
    names = LLMNamer(lm).name(groups)
    assert names[0].name == "Tea lovers"
    assert names[1].name != "Tea lovers" and "oolong" in names[1].name.lower()
    prompt = json.dumps(lm.history[0]["messages"])
    assert "Drinks coffee." in prompt  # nearest non-members are shown for contrast


# ---------------------------------------------------------------- population and importers


def test_generator_is_seeded_and_plants_documented_traits() -> None:
    first, again, other = (
        generate_population(50, seed=3),
        generate_population(50, seed=3),
        generate_population(50, seed=4),
    )
    assert [u.persona.text for u in first.users] == [
        u.persona.text for u in again.users
    ]
    assert [u.persona.text for u in first.users] != [
        u.persona.text for u in other.users
    ]
    keys = {trait.key for trait in PLANTED_TRAITS}
    assert len(keys) == 26
    for user in first.users:
        assert user.dominant_trait == user.traits[0] and set(user.traits) <= keys
        assert 3 <= len(user.traits) <= 4 and len(set(user.traits)) == len(user.traits)
        assert not {"concise", "in_depth"} <= set(user.traits) and not {
            "student",
            "retiree",
        } <= set(user.traits)


def test_read_personas_jsonl_errors_name_file_line_and_field(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text(
        '{"user_id": "a", "persona": "Likes tea."}\n\n{"user_id": 7, "persona": "Likes chess."}\n'
    )
    assert [p.user_id for p in read_personas_jsonl(good)] == ["a", "7"]
    cases = {
        '{"user_id": "a"}\n': "bad.jsonl:1: missing field 'persona'",
        '{"user_id": "a", "persona": "x"}\n{"user_id": "b", "persona": ""}\n': "bad.jsonl:2: field 'persona' is empty",
        '{"user_id": "a", "persona": "x"}\nnot json\n': "bad.jsonl:2: not valid JSON",
        '{"user_id": ["a"], "persona": "x"}\n': "bad.jsonl:1: field 'user_id' must be a string",
        '{"user_id": "a", "persona": "x"}\n{"user_id": "a", "persona": "y"}\n':
            "bad.jsonl:2: field 'user_id' repeats 'a' from line 1",
        "": "bad.jsonl: no personas found",
    }
    bad = tmp_path / "bad.jsonl"
    for content, message in cases.items():
        bad.write_text(content)
        with pytest.raises(PopulationFileError, match=message.replace("(", r"\(")):
            read_personas_jsonl(bad)
    bad.write_bytes(b"\x00\x01binary")
    with pytest.raises(PopulationFileError, match="binary file"):
        read_personas_jsonl(bad)


def test_read_artifact_takes_user_id_from_key_or_file_name(tmp_path: Path) -> None:
    named = tmp_path / "user-42.json"
    named.write_text(json.dumps({"persona": "Likes tea.", "demos": []}))
    persona, artifact = read_artifact(named)
    assert persona == Persona("user-42", "Likes tea.") and artifact["demos"] == []
    keyed = tmp_path / "artifact.json"
    keyed.write_text(json.dumps({"persona": "Likes chess.", "user_id": "u-1"}))
    assert read_artifact(keyed)[0].user_id == "u-1"
    keyed.write_text(json.dumps({"demos": []}))
    with pytest.raises(
        PopulationFileError, match=r"artifact\.json:1: missing field 'persona'"
    ):
        read_artifact(keyed)


# ---------------------------------------------------------------- CLI


def _write_population(path: Path, n: int, seed: int = 0) -> list[Persona]:
    personas = generate_population(n, seed).personas
    path.write_text(
        "".join(
            json.dumps({"user_id": p.user_id, "persona": p.text}) + "\n"
            for p in personas
        )
    )
    return personas


def test_cli_bad_input_exits_nonzero_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "personas.jsonl"
    bad.write_text('{"user_id": "a", "persona": "Likes tea."}\n{"user_id": "b"}\n')
    out = tmp_path / "insights.json"
    assert (
        insights_main(
            [str(bad), "--json", str(out), "--html", str(tmp_path / "r.html")]
        )
        == 2
    )
    assert f"{bad}:2: missing field 'persona'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["personas.jsonl"]


def test_register_adds_the_insights_command() -> None:
    parser = argparse.ArgumentParser(prog="synth")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["insights", "p.jsonl", "--json", "o.json", "--min-users", "3", "--seed", "2"]
    )
    assert (
        args.command == "insights"
        and args.min_users == 3
        and args.seed == 2
        and args.personas == ["p.jsonl"]
    )
    assert callable(args.func)


@pytest.mark.slow
def test_cli_writes_the_documented_schema_with_real_embeddings(tmp_path: Path) -> None:
    source = tmp_path / "personas.jsonl"
    personas = _write_population(source, 60, seed=5)
    markup = [
        Persona(
            f"markup-{i}",
            "The user pastes <script>alert(1)</script> and <img src=x onerror=alert(2)> into every chat.",
        )
        for i in range(6)
    ]
    with source.open("a") as handle:
        handle.writelines(
            json.dumps({"user_id": p.user_id, "persona": p.text}) + "\n" for p in markup
        )
    personas += markup
    out, report = tmp_path / "insights.json", tmp_path / "report.html"
    code = insights_main(
        [
            str(source),
            "--json",
            str(out),
            "--html",
            str(report),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--quiet",
        ]
    )
    assert code == 0
    document = json.loads(out.read_text())
    assert set(document) == {"insights", "hidden_small_clusters", "params"}
    assert isinstance(document["hidden_small_clusters"], int)
    assert document["params"]["min_users"] == 5 and document["params"][
        "n_personas"
    ] == len(personas)
    known = {p.user_id for p in personas}
    assert document["insights"]
    for item in document["insights"]:
        assert set(item) == INSIGHT_KEYS
        assert item["n_users"] == len(set(item["user_ids"])) >= 5
        assert set(item["user_ids"]) <= known
        assert 0.0 <= item["stability"] <= 1.0
    page = report.read_text()
    assert "&lt;script&gt;alert(1)" in page  # shown as text in the map labels
    assert "<script>alert(1)" not in page and "<img src=x" not in page


@pytest.mark.slow
def test_clearly_planted_traits_are_recovered_with_real_embeddings(
    tmp_path: Path,
) -> None:
    population = generate_population(200, seed=0)
    result = PopulationInsights(cache_dir=str(tmp_path / "cache"), n_resamples=2).fit(
        population.personas
    )
    recovery = planted_trait_recovery(population, result)
    for trait in ("privacy", "caution", "programming", "structured"):
        assert recovery[trait] >= 0.5, (trait, recovery)
    assert sum(score >= 0.5 for score in recovery.values()) >= 12
