"""synth.insights.splitting: personas into trait statements, and the trait core that is embedded."""

from __future__ import annotations

from dspy.utils import DummyLM

from synth.insights import LLMFacetExtractor, SentenceSplitter, trait_core
from synth.insights.splitting import persona_statements, without_subject


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
    assert splitter.split("She likes tea, and coffee. She likes tea, and coffee.") == ["She likes tea, and coffee."]
    assert splitter.split("Additionally, they enjoy humor in answers.") == ["They enjoy humor in answers."]


def test_trait_core_strips_boilerplate_but_keeps_negation() -> None:
    assert trait_core("Judging by the choices, this person appreciates tables.") == "tables"
    assert trait_core("He values brevity and dislikes long-winded responses, based on past choices.") == (
        "brevity and dislikes long-winded responses"
    )
    assert trait_core("She dislikes slang.") == "dislikes slang"
    assert trait_core("A caring voice matters to her.") == "A caring voice matters to their"


def test_llm_facet_extractor_uses_the_model_and_falls_back_when_empty() -> None:
    persona = "The user is a nurse. She wants short answers."
    lm = DummyLM([{"statements": '["The user works as a nurse.", "The user wants short answers."]'}])
    assert LLMFacetExtractor(lm).split(persona) == ["The user works as a nurse.", "The user wants short answers."]
    empty = DummyLM([{"statements": "[]"}])
    assert LLMFacetExtractor(empty).split(persona) == SentenceSplitter().split(persona)


MARKDOWN_PERSONA = """**Persona: The Careful Planner**

The synthesized persona is a user with clear and consistent preferences.
Based on the preference data, this user can be described as follows:
### Key Traits
1. **Brevity**: Wants the answer in the first line.
2) **Farm Life:** Lives on a farm far from town. Raises goats on weekends.
- **Hive Keeping** \u2014 Keeps two hives and jars honey every summer.
* **Helpfulness**: Wants helpful, relevant answers.

Overall, this persona values brevity and farm life, and expects answers to respect both.
"""


def test_markdown_personas_keep_labels_and_drop_framing() -> None:
    assert persona_statements(MARKDOWN_PERSONA) == [
        "Brevity: Wants the answer in the first line.",
        "Farm Life: Lives on a farm far from town.",
        "Farm Life: Raises goats on weekends.",
        "Hive Keeping: Keeps two hives.",
        "Hive Keeping: Jars honey every summer.",
        "Helpfulness: Wants helpful, relevant answers.",
    ]
    assert persona_statements(MARKDOWN_PERSONA) == SentenceSplitter().split(MARKDOWN_PERSONA)
    assert trait_core("Farm Life: She lives on a farm.") == "Farm Life: lives on a farm"
    assert without_subject("Farm Life: She lives on a farm.") == "Farm Life: Lives on a farm."


def test_fused_predicates_split_but_coordinated_nouns_stay_whole() -> None:
    text = (
        "She keeps two hives and plays chess online. He plays bass in a band, practises piano scales every evening "
        "and writes songs at home. Judging by the choices, she wants blunt feedback. He needs advice on payroll and "
        "taxes for his business. She likes tables, charts and diagrams."
    )
    assert persona_statements(text) == [
        "She keeps two hives.",
        "Plays chess online.",
        "He plays bass in a band.",
        "Practises piano scales every evening.",
        "Writes songs at home.",
        "Judging by the choices, she wants blunt feedback.",
        "He needs advice on payroll and taxes for his business.",
        "She likes tables, charts and diagrams.",
    ]
    assert persona_statements("In summary, the user is practical. Here is the persona:") == []


def test_predicates_of_one_facet_stay_together() -> None:
    """A predicate that shares the sentence's subject needs three words besides it to stand alone, and one that
    refers back ("...them", "...it") continues the predicate before it; a subject of its own still splits."""
    assert persona_statements("She values brevity and dislikes long-winded responses.") == [
        "She values brevity and dislikes long-winded responses."
    ]
    assert persona_statements("He writes songs and records them in a home studio.") == [
        "He writes songs and records them in a home studio."
    ]
    assert persona_statements("She bought an old house and is renovating it room by room.") == [
        "She bought an old house and is renovating it room by room."
    ]
    assert persona_statements("She keeps bees and she plays chess online.") == [
        "She keeps bees.", "She plays chess online."
    ]
    assert persona_statements("He keeps bees; he bakes bread.") == ["He keeps bees.", "He bakes bread."]
