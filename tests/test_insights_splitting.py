"""synth.insights.splitting: personas into trait statements, and the trait core that is embedded."""

from __future__ import annotations

from dspy.utils import DummyLM

from synth.insights import LLMFacetExtractor, SentenceSplitter, trait_core


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
