"""synth.insights.generators: held-out populations in other formats and wording than the catalog generator."""

from __future__ import annotations

import json
import re

from synth.insights.generators import GENERATORS, fused_population, markdown_population
from synth.insights.splitting import persona_statements
from synth.paths import asset_path


def _sentences(text: str) -> set[str]:
    return {s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 4}


def test_every_generator_is_seeded_and_plants_what_it_reports() -> None:
    for name, generate in GENERATORS.items():
        first, again = generate(40, 3), generate(40, 3)
        assert [u.persona.text for u in first.users] == [u.persona.text for u in again.users], name
        assert [u.persona.text for u in first.users] != [u.persona.text for u in generate(40, 4).users], name
        keys = {facet.key for facet in first.planted}
        assert {facet.kind for facet in first.planted} == {"style", "values", "topics", "situation"}, name
        assert first.generator == name
        for user in first.users:
            assert user.dominant_trait == user.traits[0] and set(user.traits) <= keys
            assert 3 <= len(user.traits) <= 4 and len(set(user.traits)) == len(user.traits)


def test_held_out_wording_shares_no_sentence_with_the_tuning_catalog() -> None:
    catalog = json.loads(asset_path("trait_catalog.json").read_text(encoding="utf-8"))
    tuning = {template.replace("{S}", "").strip().lower() for trait in catalog["traits"] for template in
              trait["templates"]}
    for document_name, field in (("facets_markdown.json", "explanations"), ("facets_fused.json", "predicates")):
        document = json.loads(asset_path(document_name).read_text(encoding="utf-8"))
        phrases = {phrase.lower().rstrip(".") for facet in document["facets"] for phrase in facet[field]}
        assert not {phrase for phrase in phrases if any(phrase in line for line in tuning)}, document_name


def test_markdown_personas_split_into_one_statement_per_labelled_item() -> None:
    for user in markdown_population(30, seed=1).users:
        text = user.persona.text
        items = [line for line in text.splitlines() if re.match(r"^(?:\d+[.)]|[-*]) \*\*", line)]
        statements = persona_statements(text)
        assert len(items) >= 4 and text.splitlines()[0].startswith(("#", "**"))
        assert any(line.startswith(("Overall", "In summary", "Taken together")) for line in text.splitlines())
        assert len(statements) >= len(items)
        assert all(": " in statement for statement in statements)  # every statement keeps its item's label
        assert not [s for s in statements if re.search(r"\bpersona\b", s.lower()) or s.startswith(("Overall", "Taken"))]


def test_fused_personas_fuse_facets_and_the_splitter_separates_them() -> None:
    population = fused_population(60, seed=2)
    fused = [u for u in population.users if re.search(r"\b(?:and|while)\b|;", u.persona.text)]
    assert len(fused) > 40
    sentences = sum(len(_sentences(u.persona.text)) for u in population.users)
    statements = sum(len(persona_statements(u.persona.text)) for u in population.users)
    assert statements > 1.3 * sentences
