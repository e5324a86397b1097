"""synth.insights.pipeline: counting by unique users, privacy floor, stability, themes, placement, estimator rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.insights import KMeansClusterer, PCAProjector, Persona, PopulationInsights
from synth.insights.recovery import planted_trait_recovery, recovered_share
from synth.insights.synthetic import generate_population
from tests.insights_doubles import TOPICS, TopicEmbedder, topic_personas, topic_pipeline

# The documented schema of one entry of insights.json (issue: CLI JSON schema).
INSIGHT_KEYS = {"id", "name", "description", "keywords", "n_users", "user_ids", "statements", "stability", "parent"}


def test_insights_count_unique_users_and_hide_small_clusters() -> None:
    result = topic_pipeline(n_resamples=0).fit(topic_personas())
    by_topic = {next(t for t in TOPICS if t in insight.name.lower()): insight for insight in result.leaves}
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
    assert [leaf.n_users for leaf in result.leaves] == sorted((leaf.n_users for leaf in result.leaves), reverse=True)


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
        topic_pipeline().fit([Persona("a", "The user likes to cook."), Persona("a", "The user likes chess.")])


def test_place_puts_new_statements_into_matching_insights() -> None:
    estimator = topic_pipeline(n_resamples=0)
    result = estimator.fit(topic_personas())
    placement = estimator.place("She loves to cook pasta number 3. She reads poetry at night.")
    cook = next(leaf for leaf in result.leaves if "cook" in leaf.name.lower())
    assert [s.insight_id for s in placement.statements] == [cook.id, None]
    assert placement.nearest_insights[0].insight_id == cook.id
    assert placement.typicality == pytest.approx(cook.n_users / result.n_users / 2)
    assert 0 <= placement.typicality_percentile <= 100


def test_themes_group_insights_and_json_schema_is_exact() -> None:
    topics = ["cook", "bake", "grill", "privacy", "encrypt", "tracking"]
    personas = [
        Persona(f"{topic}-{i}", f"The user likes to {topic} things, variant {i}.") for topic in topics for i in range(5)
    ]

    class GroupedEmbedder(TopicEmbedder):
        """food topics share one direction, privacy topics another, so themes must form two groups."""

        def embed(self, texts: list[str]) -> np.ndarray:
            base = super().embed(texts)
            food, private = base[:, :3].sum(axis=1, keepdims=True), base[:, 3:6].sum(axis=1, keepdims=True)
            out = np.hstack([base[:, :6] * 0.6, food, private, base[:, 6:]])
            return out / np.linalg.norm(out, axis=1, keepdims=True)

    estimator = PopulationInsights(
        embedder=GroupedEmbedder(topics), clusterer=KMeansClusterer(6), projector=PCAProjector(), n_resamples=2
    )
    result = estimator.fit(personas)
    assert len(result.leaves) == 6 and len(result.themes) == 2
    for theme in result.themes:
        child_topics = {next(t for t in topics if t in result.get(c).name.lower()) for c in theme.children}
        assert child_topics in ({"cook", "bake", "grill"}, {"privacy", "encrypt", "tracking"})
        assert theme.n_users == 15
    document = json.loads(json.dumps(result.to_json()))
    assert set(document) == {"insights", "hidden_small_clusters", "params"}
    for item in document["insights"]:
        assert set(item) == INSIGHT_KEYS
        assert item["n_users"] == len(item["user_ids"])
        assert all(set(s) == {"user_id", "text"} for s in item["statements"])
    parents = {item["parent"] for item in document["insights"] if item["id"].startswith("insight-")}
    assert parents == {"theme-1", "theme-2"}


def test_no_theme_holds_more_than_half_of_the_users() -> None:
    """Every persona says something about answer length (brief or detailed, one shared direction): grouped by
    likeness alone those two insights form a theme of every user, a catch-all; the hobbies, two themes of three."""
    hobbies = ["cook", "bake", "grill", "chess", "hike", "bees"]
    personas = [Persona(f"{hobby}-{i}", f"The user likes to {hobby}, variant {i}. "
                                        f"She wants {'brief' if i % 2 else 'detailed'} answers, case {i}.")
                for hobby in hobbies for i in range(6)]

    class StyleEmbedder(TopicEmbedder):
        """Food hobbies share one direction, outdoor ones another, answer length a third."""

        def embed(self, texts: list[str]) -> np.ndarray:
            base = super().embed(texts)
            groups = [base[:, i:j].sum(axis=1, keepdims=True) for i, j in ((0, 3), (3, 6), (6, 8))]
            out = np.hstack([base[:, :8] * 0.6, *groups, base[:, 8:]])
            return out / np.linalg.norm(out, axis=1, keepdims=True)

    def themes(**kwargs) -> list[set[str]]:
        embedder = StyleEmbedder([*hobbies, "brief", "detailed"])
        result = PopulationInsights(embedder=embedder, clusterer=KMeansClusterer(8), projector=PCAProjector(),
                                    n_resamples=2, **kwargs).fit(personas)
        assert len(result.leaves) == 8
        return [set(theme.user_ids) for theme in result.themes]

    assert any(len(users) == 36 for users in themes(max_theme_share=1.0))
    bounded = themes()
    assert bounded and all(len(users) <= 18 for users in bounded)
    with pytest.raises(ValueError, match="max_theme_share must be in"):
        themes(max_theme_share=0)


def _filler_population() -> tuple[list[Persona], set[str], set[str], set[str]]:
    """10 cooks and 10 gardeners, each in their own words; 12 of them also carry the same filler sentence (two
    spellings of one wording)."""
    personas, cooks, gardeners, filler = [], set(), set(), set()
    for i in range(20):
        user_id = f"user-{i}"
        text = f"The user loves to cook dish {i}." if i < 10 else f"She tends a garden bed {i}."
        (cooks if i < 10 else gardeners).add(user_id)
        if i % 5 < 3:
            text += " The user wants " + ("Helpful, relevant answers!" if i % 2 else "helpful relevant answers.")
            filler.add(user_id)
        personas.append(Persona(user_id, text))
    return personas, cooks, gardeners, filler


def test_a_wording_most_personas_share_is_its_own_insight_not_part_of_a_trait() -> None:
    personas, cooks, gardeners, filler = _filler_population()

    def fit(**kwargs):
        return PopulationInsights(embedder=TopicEmbedder(["cook", "garden"]), clusterer=KMeansClusterer(n_clusters=2),
                                  projector=PCAProjector(), **kwargs).fit(personas)

    result = fit(n_resamples=2)
    by_users = {frozenset(leaf.user_ids): leaf for leaf in result.leaves}
    assert set(by_users) == {frozenset(cooks), frozenset(gardeners), frozenset(filler)}
    assert result.params["common_insights"] == [by_users[frozenset(filler)].id]
    assert all(leaf.stability == pytest.approx(1.0) for leaf in result.leaves)
    # Without the rule the clusterer, which sees one filler wording among 20 trait wordings, merges it into a trait.
    merged = fit(n_resamples=0, common_share=None)
    user_sets = {frozenset(leaf.user_ids) for leaf in merged.leaves}
    assert not {frozenset(cooks), frozenset(gardeners)} <= user_sets and merged.params["common_insights"] == []
    # A wording shared by fewer than the share (12 of 20 < 0.7) stays with the clusterer.
    assert fit(n_resamples=0, common_share=0.7).params["common_insights"] == []


def test_common_share_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="common_share must be in"):
        topic_pipeline(common_share=0.0).fit(topic_personas())


# ---------------------------------------------------------------- estimator rules and fitted attributes


def test_init_only_stores_parameters_and_set_params_changes_them() -> None:
    embedder = TopicEmbedder(TOPICS)
    estimator = PopulationInsights(embedder=embedder, min_users=0)  # checked at fit, not here
    params = estimator.get_params()
    assert params["embedder"] is embedder and params["min_users"] == 0
    assert params["splitter"] is None and params["clusterer"] is None and params["cache_dir"] is None
    assert not [name for name in vars(estimator) if name.endswith("_")]
    with pytest.raises(ValueError, match="min_users must be at least 1"):
        estimator.fit(topic_personas())
    assert estimator.set_params(min_users=3, seed=2) is estimator
    assert estimator.get_params()["min_users"] == 3 and estimator.seed == 2
    with pytest.raises(ValueError, match="unknown parameters for PopulationInsights: colour"):
        estimator.set_params(colour="red")


def test_result_records_the_parts_used_by_name() -> None:
    result = topic_pipeline(n_resamples=0).fit(topic_personas())
    params = result.params
    assert {key: params[key] for key in ("splitter", "embedder", "clusterer", "projector", "namer", "reducer")} == {
        "splitter": "SentenceSplitter",
        "embedder": "topic-test",
        "clusterer": "KMeansClusterer",
        "projector": "PCAProjector",
        "namer": "CentralStatementNamer",
        "reducer": None,
    }
    assert list(params["seconds"]) == ["split", "embed", "reduce", "cluster", "stability", "name", "project"]
    assert params["n_statements"] == 31 and params["n_personas"] == 23


def test_fitted_attributes_describe_the_result() -> None:
    estimator = topic_pipeline(n_resamples=2)
    with pytest.raises(RuntimeError, match="call fit"):
        estimator.place("She loves to cook.")
    personas = topic_personas()
    result = estimator.fit(personas)
    assert estimator.result_ is result
    assert estimator.user_ids_ == [p.user_id for p in personas]
    assert estimator.statements_ == [s.text for s in result.statements]
    assert len(estimator.labels_) == len(estimator.statements_) == len(estimator.statement_cores_)
    assert estimator.embeddings_.shape[0] == len(estimator.cores_) == len(estimator.core_positions_)
    assert [tuple(members) for members in estimator.leaf_members_] == [leaf.statements for leaf in result.leaves]
    for leaf, members in enumerate(estimator.leaf_members_):
        assert set(estimator.core_leaves_[estimator.statement_cores_[members]]) == {leaf}
        assert len(set(estimator.labels_[members])) == 1  # a shown insight is one cluster of the clusterer
    assert estimator.stability_ == [insight.stability for insight in result.insights]
    assert estimator.n_hidden_ == result.hidden_small_clusters
    assert estimator.leaf_shares_.tolist() == [leaf.n_users / len(personas) for leaf in result.leaves]


def test_a_failed_refit_leaves_no_attributes_of_the_earlier_fit() -> None:
    estimator = topic_pipeline(n_resamples=0)
    estimator.fit(topic_personas())
    with pytest.raises(ValueError, match="no trait statements"):
        estimator.fit([Persona("a", "Hi.")])
    assert not hasattr(estimator, "result_") and not hasattr(estimator, "embeddings_")


@pytest.mark.slow
def test_clearly_planted_traits_are_recovered_with_real_embeddings(tmp_path) -> None:
    population = generate_population(200, seed=0)
    result = PopulationInsights(cache_dir=str(tmp_path / "cache"), n_resamples=2).fit(population.personas)
    recovery = planted_trait_recovery(population, result)
    for trait in ("privacy", "caution", "programming", "structured"):
        assert recovery[trait] >= 0.5, (trait, recovery)
    assert recovered_share(recovery) >= 12 / 26


@pytest.mark.slow
def test_facets_written_otherwise_than_the_tuning_generator_are_recovered(tmp_path) -> None:
    """The held-out generators (LLM-style markdown, fused paraphrases), real embeddings: the default recovers most
    of their 32 planted facets (docs/insights.md has the five-seed figures; a point or two of slack for CPUs that
    embed in float32)."""
    from synth.insights.generators import fused_population, markdown_population

    recovered = 0
    for population in (markdown_population(120, seed=0), fused_population(120, seed=0)):
        result = PopulationInsights(cache_dir=str(tmp_path / "cache"), n_resamples=0).fit(population.personas)
        recovered += sum(score >= 0.5 for score in planted_trait_recovery(population, result).values())
    assert recovered >= 28


def test_clusters_of_one_trait_in_two_wordings_are_one_insight() -> None:
    """Ten beekeepers under two bold labels (which the embedder, like a density clusterer, tells apart) and six
    gardeners: the two label clusters share their distinctive words, so they are one insight."""
    personas = [Persona(f"bee-{i}", f"- **{'Apiary Hobby' if i % 2 else 'Beekeeping'}**: Keeps {i + 2} hives of bees "
                                    f"and jars honey, batch {i}.") for i in range(10)]
    personas += [Persona(f"garden-{i}", f"She tends a garden of roses, bed {i}.") for i in range(6)]

    def user_sets(**kwargs) -> set[frozenset[str]]:
        result = PopulationInsights(embedder=TopicEmbedder(["apiary", "beekeeping", "garden"]),
                                    clusterer=KMeansClusterer(n_clusters=3), projector=PCAProjector(),
                                    n_resamples=0, **kwargs).fit(personas)
        return {frozenset(leaf.user_ids) for leaf in result.leaves}

    bees, gardeners = {p.user_id for p in personas[:10]}, {p.user_id for p in personas[10:]}
    assert user_sets(merge_similarity=0.16) == {frozenset(bees), frozenset(gardeners)}
    assert frozenset(bees) not in user_sets()  # joining is off by default
    with pytest.raises(ValueError, match="merge_similarity must be in"):
        user_sets(merge_similarity=1.5)
