"""Synthetic populations with planted traits, to measure how well the insights pipeline recovers them.

Each synthetic user gets persona text written like a SynthesizeMe persona (third person, several sentences) built
from a trait catalog (`assets/trait_catalog.json`): planted traits in four facets (style, values, topics,
situation), each with eight paraphrases in different wording, so recovering a trait needs meaning, not shared words.
Templates are filled per persona from a referent: {S} subject, {S!l} subject in lower case, {O} object pronoun,
{P} possessive, {P!c} possessive capitalised ("The user" / "This person" / "She" / "He").

A user has one *dominant* trait, stated twice in two different paraphrases, and two or three *secondary* traits,
stated once each; traits of one exclusive group (concise vs in-depth, student vs retiree, ...) never meet. Traits
are drawn with unequal, fixed weights, so planted groups range from a few to about a quarter of the users. About
half of the users also get one generic statement that fits anyone ("values accurate answers"), and about a third
one idiosyncratic hobby from a pool of rare ones: realistic noise that falls under the privacy floor. About a third
of the sentences get a framing prefix ("Generally, ...") or suffix ("..., especially on busy days") that carries no
trait. Sentences are shuffled and some pairs joined into one with ", and" (the splitter must undo that).
Everything is drawn from `random.Random(seed)`: the same seed gives the same population.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from synth.insights.types import Persona
from synth.paths import asset_path

DEFAULT_CATALOG = "trait_catalog.json"


@dataclass(frozen=True)
class PlantedTrait:
    key: str
    facet: str
    label: str
    weight: float
    templates: tuple[str, ...]
    exclusive_group: str = ""


@dataclass(frozen=True)
class TraitCatalog:
    """The wording a synthetic population is written from (see the module docstring)."""

    traits: tuple[PlantedTrait, ...]
    generic_statements: tuple[str, ...]
    rare_hobbies: tuple[str, ...]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    referents: tuple[dict[str, str], ...]

    @classmethod
    def load(cls, path: str | Path | None = None) -> TraitCatalog:
        """Read a catalog file; the default is the bundled `trait_catalog.json`."""
        document = json.loads(Path(path or asset_path(DEFAULT_CATALOG)).read_text(encoding="utf-8"))
        return cls(
            traits=tuple(
                PlantedTrait(
                    key=trait["key"],
                    facet=trait["facet"],
                    label=trait["label"],
                    weight=float(trait["weight"]),
                    templates=tuple(trait["templates"]),
                    exclusive_group=trait.get("exclusive_group", ""),
                )
                for trait in document["traits"]
            ),
            generic_statements=tuple(document["generic_statements"]),
            rare_hobbies=tuple(document["rare_hobbies"]),
            prefixes=tuple(document["prefixes"]),
            suffixes=tuple(document["suffixes"]),
            referents=tuple(dict(referent) for referent in document["referents"]),
        )


@dataclass(frozen=True)
class PlantedFacet:
    """What a generator planted: a key, its kind (style, values, topics, situation) and a short label."""

    key: str
    kind: str
    label: str


@dataclass(frozen=True)
class SyntheticUser:
    persona: Persona
    dominant_trait: str
    traits: tuple[str, ...]


@dataclass(frozen=True)
class SyntheticPopulation:
    """Generated personas and what was planted in them; `generator` names the generator that wrote them."""

    users: tuple[SyntheticUser, ...]
    seed: int
    planted: tuple[PlantedFacet, ...]
    generator: str = "catalog"

    @property
    def personas(self) -> list[Persona]:
        return [user.persona for user in self.users]

    def users_with_trait(self, trait_key: str) -> set[str]:
        return {user.persona.user_id for user in self.users if trait_key in user.traits}


def _fill(template: str, referent: dict[str, str]) -> str:
    text = template
    for key in ("S!l", "P!c", "S", "O", "P"):
        text = text.replace("{" + key + "}", referent[key])
    return text


def _decorate(sentence: str, rng: random.Random, catalog: TraitCatalog) -> str:
    if rng.random() < 0.35:
        sentence = sentence.rstrip(".") + rng.choice(catalog.suffixes) + "."
    if rng.random() < 0.25:
        prefix = rng.choice(catalog.prefixes)
        first_word = sentence.split(" ", 1)[0]
        keep_capital = first_word in {"English", "I"}
        sentence = prefix + (sentence if keep_capital else sentence[0].lower() + sentence[1:])
    return sentence


def _join_clauses(first: str, second: str) -> str:
    """'She bakes bread.' + 'She wants tips.' -> 'She bakes bread, and she wants tips.'"""
    second = second if second.startswith(("I ", "English")) else second[0].lower() + second[1:]
    return first.rstrip(".") + ", and " + second


class Weighted(Protocol):
    weight: float
    exclusive_group: str


T = TypeVar("T", bound=Weighted)


def _draw_weighted(rng: random.Random, traits: Sequence[T]) -> T:
    return rng.choices(list(traits), weights=[trait.weight for trait in traits], k=1)[0]


def draw_traits(rng: random.Random, traits: Sequence[T]) -> list[T]:
    """The dominant trait first, then two or three secondary ones, never two of one exclusive group."""
    chosen = [_draw_weighted(rng, traits)]
    for _ in range(rng.choice((2, 2, 3))):
        candidates = [
            trait
            for trait in traits
            if trait not in chosen
            and not any(trait.exclusive_group and trait.exclusive_group == c.exclusive_group for c in chosen)
        ]
        chosen.append(_draw_weighted(rng, candidates))
    return chosen


def _persona_text(
    rng: random.Random, catalog: TraitCatalog, traits: list[PlantedTrait], referent: dict[str, str],
    join_probability: float,
) -> str:
    dominant = traits[0]
    sentences = [_fill(template, referent) for template in rng.sample(dominant.templates, 2)]
    sentences += [_fill(rng.choice(trait.templates), referent) for trait in traits[1:]]
    if rng.random() < 0.5:
        sentences.append(_fill(rng.choice(catalog.generic_statements), referent))
    if rng.random() < 0.35:
        sentences.append(_fill(rng.choice(catalog.rare_hobbies), referent))
    sentences = [_decorate(sentence, rng, catalog) for sentence in sentences]
    rng.shuffle(sentences)
    joined: list[str] = []
    for sentence in sentences:
        if joined and rng.random() < join_probability and ", and " not in joined[-1]:
            joined[-1] = _join_clauses(joined[-1], sentence)
        else:
            joined.append(sentence)
    return " ".join(joined)


def generate_population(
    n_users: int = 300, seed: int = 0, join_probability: float = 0.25, catalog: TraitCatalog | None = None
) -> SyntheticPopulation:
    """`n_users` synthetic personas with planted traits from `catalog` (default: the bundled one)."""
    catalog = catalog or TraitCatalog.load()
    rng = random.Random(seed)
    users: list[SyntheticUser] = []
    width = len(str(max(n_users - 1, 1)))
    for index in range(n_users):
        referent = rng.choice(catalog.referents)
        traits = draw_traits(rng, catalog.traits)
        text = _persona_text(rng, catalog, traits, referent, join_probability)
        persona = Persona(user_id=f"synthetic-{seed}-{index:0{width}d}", text=text)
        users.append(SyntheticUser(persona, traits[0].key, tuple(trait.key for trait in traits)))
    planted = tuple(PlantedFacet(trait.key, trait.facet, trait.label) for trait in catalog.traits)
    return SyntheticPopulation(tuple(users), seed, planted)
