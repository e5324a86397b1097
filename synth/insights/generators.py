"""Held-out persona generators: planted facets written in other formats and wording than the catalog generator.

The catalog generator (`synthetic.generate_population`) is the one the pipeline is tuned on. These two are only
measured, so a choice that merely fits one generator's wording shows up as a gap between them:

- `markdown_population`: personas the way instruction-tuned models write them: a headline, often a boilerplate
  opener ("The synthesized persona is..."), a numbered or bulleted list of `**Trait label**: explanation` lines
  (label and explanation drawn independently, so the label is part of the meaning), generic filler lines every
  persona shares ("**Helpfulness**: Wants helpful, relevant answers."), and a closing "Overall, ..." paragraph that
  names two of the user's traits by label (`assets/facets_markdown.json`);
- `fused_population`: plain prose whose facets are predicates in fresh wording, often fused into one sentence
  ("She keeps bees and practises piano scales every evening.", "X, Y and Z", "...; she ...", "..., while ...")
  (`assets/facets_fused.json`).

Users draw facets as in the catalog generator (`synthetic.draw_traits`: one dominant and two or three secondary,
fixed unequal weights, exclusive groups). Everything comes from `random.Random(seed)`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from synth.insights.synthetic import (
    PlantedFacet,
    SyntheticPopulation,
    SyntheticUser,
    draw_traits,
    generate_population,
)
from synth.insights.types import Persona
from synth.paths import asset_path


@dataclass(frozen=True)
class WrittenFacet:
    """A planted facet with its wordings: bold labels and explanations (markdown) or predicates (fused prose)."""

    key: str
    kind: str
    weight: float
    phrases: tuple[str, ...]
    labels: tuple[str, ...] = ()
    exclusive_group: str = ""

    def planted(self) -> PlantedFacet:
        return PlantedFacet(self.key, self.kind, self.labels[0] if self.labels else self.phrases[0])


@cache
def _document(name: str) -> dict[str, Any]:
    return json.loads(asset_path(name).read_text(encoding="utf-8"))


def _facets(document: dict[str, Any], phrases_field: str) -> tuple[WrittenFacet, ...]:
    return tuple(
        WrittenFacet(
            key=item["key"],
            kind=item["kind"],
            weight=float(item["weight"]),
            phrases=tuple(item[phrases_field]),
            labels=tuple(item.get("labels", ())),
            exclusive_group=item.get("exclusive_group", ""),
        )
        for item in document["facets"]
    )


def _user_id(generator: str, seed: int, index: int, n_users: int) -> str:
    return f"{generator}-{seed}-{index:0{len(str(max(n_users - 1, 1)))}d}"


# ---------------------------------------------------------------- markdown, LLM-style


def _markdown_persona(rng: random.Random, document: dict[str, Any], facets: list[WrittenFacet]) -> str:
    bullet = rng.choice(("{n}. ", "- ", "* ", "{n}) "))
    item = rng.choice(("**{label}**: {text}", "**{label}:** {text}", "**{label}** \u2014 {text}"))
    entries = [(rng.choice(facet.labels), rng.choice(facet.phrases)) for facet in facets]
    entries += [tuple(pair) for pair in rng.sample(document["filler"], rng.randint(1, 3))]
    if rng.random() < 0.35:
        entries.append(tuple(rng.choice(document["rare"])))
    rng.shuffle(entries)
    headline = rng.choice(document["headlines"]).format(
        adjective=rng.choice(document["headline_adjectives"]), noun=rng.choice(document["headline_nouns"])
    )
    lines = [headline, ""]
    opener = rng.choice(document["openers"])
    section = rng.choice(document["section_headings"])
    lines += [line for line in (opener, section) if line]
    for number, (label, text) in enumerate(entries, start=1):
        lines.append(bullet.format(n=number) + item.format(label=label, text=text))
    closing_labels = [rng.choice(facet.labels).lower() for facet in (facets[0], rng.choice(facets[1:]))]
    lines += ["", rng.choice(document["closings"]).format(a=closing_labels[0], b=closing_labels[1])]
    return "\n".join(lines)


def _written_population(kind: str, facets_file: str, phrasing: str, write, n_users: int,
                        seed: int) -> SyntheticPopulation:
    """`n_users` personas written by ``write(rng, document, drawn_facets)`` with the facets of ``facets_file``."""
    document = _document(facets_file)
    facets = _facets(document, phrasing)
    rng = random.Random(seed)
    users = []
    for index in range(n_users):
        drawn = draw_traits(rng, facets)
        persona = Persona(_user_id(kind, seed, index, n_users), write(rng, document, drawn))
        users.append(SyntheticUser(persona, drawn[0].key, tuple(facet.key for facet in drawn)))
    return SyntheticPopulation(tuple(users), seed, tuple(facet.planted() for facet in facets), kind)


def markdown_population(n_users: int = 120, seed: int = 0) -> SyntheticPopulation:
    """`n_users` LLM-style markdown personas with the facets of `assets/facets_markdown.json` planted."""
    return _written_population("markdown", "facets_markdown.json", "explanations", _markdown_persona, n_users, seed)


# ---------------------------------------------------------------- plain prose, facets fused


def _lower_subject(subject: str) -> str:
    return {"She": "she", "He": "he"}.get(subject, subject.lower())


def _fused_sentences(rng: random.Random, subject: str, predicates: list[str]) -> list[str]:
    """Predicates grouped into sentences: alone, or two or three fused in one of several ways."""
    again = _lower_subject(subject)
    sentences = []
    rest = list(predicates)
    while rest:
        size = min(len(rest), rng.choices((1, 2, 3), weights=(0.35, 0.5, 0.15))[0])
        group, rest = rest[:size], rest[size:]
        if size == 1:
            body = f"{subject} {group[0]}"
        elif size == 2:
            body = rng.choice(
                (
                    f"{subject} {group[0]} and {group[1]}",
                    f"{subject} {group[0]}, and {again} {group[1]}",
                    f"{subject} {group[0]}; {again} also {group[1]}",
                    f"{subject} {group[0]}, while {again} {group[1]}",
                )
            )
        else:
            body = f"{subject} {group[0]}, {group[1]} and {group[2]}"
        opener = rng.choice(("", "", "", "Judging from the comparisons, ", "From what the preferences show, "))
        sentences.append(opener + (body[0].lower() + body[1:] if opener else body) + ".")
    return sentences


def _fused_persona(rng: random.Random, document: dict[str, Any], facets: list[WrittenFacet]) -> str:
    subject = rng.choice(document["subjects"])
    dominant, *secondary = facets
    predicates = rng.sample(dominant.phrases, 2) + [rng.choice(facet.phrases) for facet in secondary]
    if rng.random() < 0.5:
        predicates.append(rng.choice(document["generic"]))
    if rng.random() < 0.35:
        predicates.append(rng.choice(document["rare"]))
    rng.shuffle(predicates)
    return " ".join(_fused_sentences(rng, subject, predicates))


def fused_population(n_users: int = 120, seed: int = 0) -> SyntheticPopulation:
    """`n_users` prose personas with the facets of `assets/facets_fused.json` planted, often fused in a sentence."""
    return _written_population("fused", "facets_fused.json", "predicates", _fused_persona, n_users, seed)


GENERATORS: dict[str, Callable[[int, int], SyntheticPopulation]] = {
    "catalog": lambda n_users, seed: generate_population(n_users, seed),
    "markdown": markdown_population,
    "fused": fused_population,
}
"""Every population generator by name; `catalog` is the one the pipeline's defaults were chosen on."""
