"""Personas for the insights tab: a seeded generator with planted traits, and importers.

Synthetic population (`generate_population`)
--------------------------------------------
Each synthetic user gets persona text written like a SynthesizeMe persona (third person, several sentences) built
from a catalog of 26 planted traits in four facets:

- style: concise, in-depth, structured, warm, humor, formal, examples
- values: evidence, environment, privacy, caution, bluntness, faith, frugal
- topics: programming, cooking, fitness, travel, gardening, history
- situation: parent, student, retiree, chronic illness, small business, non-native English speaker

Every trait has eight paraphrases with different wording (so recovering it needs meaning, not shared words).
A user has one *dominant* trait, stated twice in two different paraphrases, and two or three *secondary*
traits, stated once each; mutually exclusive traits (concise vs in-depth, student vs retiree, ...) never meet.
Dominant and secondary traits are drawn with unequal, fixed weights, so planted groups range from about 2% to
about 25% of users. About half of the users also get one generic statement that fits anyone ("values accurate
answers"), and about a third get one idiosyncratic hobby from a pool of 60 rare ones; these are realistic noise:
at a few hundred users the hobbies fall under the privacy floor. About a third of the
sentences get a framing prefix ("Generally, ...") or suffix ("..., especially on busy days") that persona writers
add and that carries no trait. Sentences are shuffled, some pairs are joined
into one sentence with ", and" (the splitter must undo that), and users are referred to as "The user", "This
person", "She" or "He". Everything is drawn from `random.Random(seed)`: the same seed gives the same population.

Importers
---------
`read_personas_jsonl` reads lines with `user_id` and `persona`; `read_artifact` reads a saved SynthesizeMe artifact
(top-level `persona`; user id from a `user_id` key or the file name). Errors name the file, line and field.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.data import atomic_write_text, json_lines
from synth.insights.types import InsightsResult, Persona


@dataclass(frozen=True)
class PlantedTrait:
    key: str
    facet: str
    label: str
    weight: float
    templates: tuple[str, ...]
    exclusive_group: str = ""


@dataclass(frozen=True)
class SyntheticUser:
    persona: Persona
    dominant_trait: str
    traits: tuple[str, ...]


@dataclass(frozen=True)
class SyntheticPopulation:
    users: tuple[SyntheticUser, ...]
    seed: int

    @property
    def personas(self) -> list[Persona]:
        return [user.persona for user in self.users]

    def users_with_trait(self, trait_key: str) -> set[str]:
        return {user.persona.user_id for user in self.users if trait_key in user.traits}


class PopulationFileError(ValueError):
    """A personas file that cannot be read; the message names the file, line and field."""


# {S} subject, {O} object pronoun, {P} possessive: filled per persona so sentences read naturally.
PLANTED_TRAITS: tuple[PlantedTrait, ...] = (
    PlantedTrait(
        "concise",
        "style",
        "prefers short, to-the-point answers",
        3.0,
        (
            "{S} prefers short, concise answers.",
            "{S} wants responses kept brief and to the point.",
            "{S} likes concise replies without unnecessary detail.",
            "Short answers that get straight to the point suit {O} best.",
            "{S} values brevity and dislikes long-winded responses.",
            "{S} favors brief, compact answers over lengthy ones.",
            "{S} asks for concise summaries rather than long explanations.",
            "{S} appreciates answers that are short and succinct.",
        ),
        "length",
    ),
    PlantedTrait(
        "in_depth",
        "style",
        "wants thorough, in-depth explanations",
        2.0,
        (
            "{S} wants thorough, in-depth explanations.",
            "{S} enjoys long, detailed answers that explore a topic in depth.",
            "{S} prefers comprehensive responses with plenty of detail.",
            "In-depth, detailed coverage of a question is what {S!l} looks for.",
            "{S} feels shortchanged by superficial answers and wants more depth.",
            "{S} appreciates detailed explanations of the reasoning behind things.",
            "{S} values thorough, exhaustive answers over quick summaries.",
            "{S} likes elaborate, in-depth discussions of complex topics.",
        ),
        "length",
    ),
    PlantedTrait(
        "structured",
        "style",
        "likes lists, headings and numbered steps",
        3.0,
        (
            "{S} likes responses organized with bullet points and headings.",
            "{S} prefers numbered steps over paragraphs of prose.",
            "Clear formatting, such as lists and sections, helps {O} read answers.",
            "{S} finds well-structured answers with bullet lists easier to follow.",
            "{S} wants information broken into labeled sections.",
            "{S} appreciates tables and outlines that organize the material.",
            "{S} gets lost in walls of text and wants a clear layout.",
            "{S} favors answers formatted as checklists or step-by-step lists.",
        ),
    ),
    PlantedTrait(
        "warm",
        "style",
        "appreciates a warm, empathetic tone",
        2.0,
        (
            "{S} appreciates a warm and empathetic tone.",
            "{S} responds well to kindness and emotional support in answers.",
            "{S} likes when the assistant acknowledges {P} feelings before giving advice.",
            "A caring, compassionate voice matters to {O}.",
            "{S} prefers gentle, encouraging wording over a cold, clinical style.",
            "{S} values responses that feel friendly and understanding.",
            "{S} wants to feel heard and reassured when asking for help.",
            "{S} warms to answers that show genuine empathy.",
        ),
        "tone",
    ),
    PlantedTrait(
        "humor",
        "style",
        "enjoys playful humor",
        1.5,
        (
            "{S} enjoys a bit of humor and wit in responses.",
            "{S} likes playful, lighthearted answers with a joke or two.",
            "{S} appreciates when the assistant is funny rather than stiff.",
            "A clever pun or witty remark makes {O} smile.",
            "{S} prefers a casual, humorous voice to a dry one.",
            "{S} finds jokes and amusing asides make answers more engaging.",
            "{S} values a sense of humor in conversation.",
            "{S} likes banter and a light comic touch.",
        ),
        "tone",
    ),
    PlantedTrait(
        "formal",
        "style",
        "prefers formal, professional language",
        1.2,
        (
            "{S} prefers formal, professional language.",
            "{S} expects a formal and polite tone in responses.",
            "A professional, formal register suits {O} best.",
            "{S} dislikes slang and wants answers written formally.",
            "{S} finds casual, chatty language unprofessional.",
            "{S} wants responses that sound formal, like a professional report.",
            "{S} values courteous, formal wording.",
            "{S} favors a serious, professional tone over a casual one.",
        ),
        "tone",
    ),
    PlantedTrait(
        "examples",
        "style",
        "learns best from concrete examples",
        1.5,
        (
            "{S} learns best from concrete examples.",
            "{S} wants abstract ideas illustrated with practical examples.",
            "Worked examples help {O} understand new concepts.",
            "{S} asks for an example to see how something works.",
            "{S} finds explanations clearer when they include a concrete example.",
            "{S} appreciates answers that show specific examples.",
            "{S} likes seeing an example before the general rule.",
            "{S} understands things faster through real-world examples and analogies.",
        ),
    ),
    PlantedTrait(
        "evidence",
        "values",
        "wants sources and evidence",
        2.0,
        (
            "{S} wants claims backed by sources and citations.",
            "{S} trusts answers more when they reference studies or data.",
            "{S} is skeptical of statements without evidence.",
            "Scientific research and peer-reviewed findings carry weight with {O}.",
            "{S} asks where information comes from and expects references.",
            "{S} values fact-checked, evidence-based responses.",
            "{S} prefers statistics and verifiable facts over opinions.",
            "{S} wants links to reliable sources for further reading.",
        ),
    ),
    PlantedTrait(
        "environment",
        "values",
        "has environmental concerns",
        1.0,
        (
            "{S} cares deeply about the environment and climate change.",
            "{S} worries about the ecological impact of everyday choices.",
            "{S} likes suggestions that are eco-friendly and sustainable.",
            "Reducing {P} carbon footprint is important to {O}.",
            "{S} tries to live sustainably, recycling and avoiding waste.",
            "{S} prefers green options, such as public transport and renewable energy.",
            "{S} is concerned about pollution and the health of the planet.",
            "{S} wants recommendations that take sustainability into account.",
        ),
    ),
    PlantedTrait(
        "privacy",
        "values",
        "is protective of personal data and privacy",
        1.2,
        (
            "{S} is protective of {P} personal data and online privacy.",
            "{S} distrusts apps that collect too much information.",
            "{S} prefers tools that do not track users.",
            "Data security and confidentiality matter a great deal to {O}.",
            "{S} avoids sharing personal details with online services.",
            "{S} worries about surveillance and how companies use {P} data.",
            "{S} favors encrypted, privacy-respecting software.",
            "{S} reads privacy policies before signing up for anything.",
        ),
    ),
    PlantedTrait(
        "caution",
        "values",
        "wants risks and safety warnings",
        1.2,
        (
            "{S} wants to be warned about risks and possible dangers.",
            "{S} is cautious and prefers safe, conservative advice.",
            "Safety comes first for {O}, who wants risks flagged.",
            "{S} appreciates safety warnings about what could go wrong.",
            "{S} avoids risky choices and wants the safest option.",
            "{S} values careful advice that flags safety hazards.",
            "{S} prefers to hear the potential risks before trying something new.",
            "{S} likes responses that err on the side of caution and safety.",
        ),
    ),
    PlantedTrait(
        "blunt",
        "values",
        "wants blunt, honest feedback",
        1.2,
        (
            "{S} wants blunt, honest feedback without sugarcoating.",
            "{S} prefers the honest truth, stated bluntly.",
            "{S} dislikes hedging and wants a frank, direct opinion.",
            "Honest, candid answers matter to {O}, even when unwelcome.",
            "{S} appreciates when the assistant says bluntly that an idea is bad.",
            "{S} values direct, honest criticism over diplomacy.",
            "{S} wants straightforward, brutally honest assessments.",
            "{S} prefers frank feedback to polite evasions.",
        ),
    ),
    PlantedTrait(
        "faith",
        "values",
        "is guided by religious faith",
        0.6,
        (
            "{S} is a person of religious faith who prays regularly.",
            "{P!c} spiritual beliefs guide many of {P} decisions.",
            "{S} attends church services every week.",
            "{S} values answers that respect {P} religious convictions.",
            "Faith and scripture play a central role in {P} life.",
            "{S} looks for advice compatible with {P} religious values.",
            "{S} is active in {P} faith community.",
            "{S} draws comfort and guidance from {P} belief in God.",
        ),
    ),
    PlantedTrait(
        "frugal",
        "values",
        "is budget-conscious",
        1.5,
        (
            "{S} is budget-conscious and looks for ways to save money.",
            "{S} prefers cheap or free alternatives to expensive products.",
            "Cost is usually the deciding factor for {O}.",
            "{S} hunts for discounts and compares prices carefully.",
            "{S} lives on a tight budget and avoids unnecessary spending.",
            "{S} appreciates money-saving tips.",
            "{S} wants recommendations that are affordable.",
            "{S} is frugal and dislikes paying for premium features.",
        ),
    ),
    PlantedTrait(
        "programming",
        "topics",
        "asks about programming",
        2.0,
        (
            "{S} often asks about programming and software development.",
            "{S} writes Python code and debugs scripts regularly.",
            "{S} is a software engineer who works with databases and APIs.",
            "Coding questions make up much of {P} conversations.",
            "{S} likes technical discussions about algorithms and code.",
            "{S} builds web applications in {P} spare time.",
            "{S} wants code snippets that compile and run.",
            "{S} works in tech and talks about frameworks and libraries.",
        ),
    ),
    PlantedTrait(
        "cooking",
        "topics",
        "loves cooking",
        1.5,
        (
            "{S} loves cooking and trying new recipes.",
            "{S} bakes bread and pastries on weekends.",
            "{S} asks for meal ideas and ingredient substitutions.",
            "Spending time in the kitchen is one of {P} favorite hobbies.",
            "{S} enjoys experimenting with spices and world cuisines.",
            "{S} plans {P} weekly dinners and likes easy recipes.",
            "{S} is a home cook who wants tips on techniques.",
            "{S} collects recipes and cooks for friends.",
        ),
    ),
    PlantedTrait(
        "fitness",
        "topics",
        "is into fitness and training",
        1.5,
        (
            "{S} is into fitness and works out most days.",
            "{S} trains for marathons and tracks {P} running pace.",
            "{S} lifts weights at the gym and asks about training plans.",
            "Staying physically active is a priority for {O}.",
            "{S} wants exercise routines that build strength.",
            "{S} follows a workout schedule and cares about recovery.",
            "{S} enjoys cycling and hiking to stay in shape.",
            "{S} asks about protein intake and muscle gain.",
        ),
    ),
    PlantedTrait(
        "travel",
        "topics",
        "loves to travel",
        1.2,
        (
            "{S} loves to travel and explore new countries.",
            "{S} plans trips abroad and asks for itineraries.",
            "{S} enjoys backpacking and discovering local cultures.",
            "Visiting new places is {P} favorite way to spend vacations.",
            "{S} wants tips on flights, hotels and sightseeing.",
            "{S} is an avid traveler who has visited dozens of cities.",
            "{S} likes learning about destinations before a journey.",
            "{S} dreams about the next adventure overseas.",
        ),
    ),
    PlantedTrait(
        "gardening",
        "topics",
        "is a gardener",
        0.8,
        (
            "{S} is an enthusiastic gardener.",
            "{S} grows vegetables and herbs in {P} backyard.",
            "{S} asks about soil, compost and planting seasons.",
            "Tending plants and flowers relaxes {O}.",
            "{S} keeps a greenhouse and raises tomato seedlings.",
            "{S} wants advice on pruning shrubs and fighting garden pests.",
            "{S} spends weekends weeding and watering {P} garden beds.",
            "{S} likes learning which plants thrive in shade.",
        ),
    ),
    PlantedTrait(
        "history",
        "topics",
        "is a history buff",
        0.8,
        (
            "{S} is a history buff.",
            "{S} reads books about historical wars and ancient civilizations.",
            "{S} enjoys learning about historical events and figures.",
            "History fascinates {O}, from ancient Rome to the Cold War.",
            "{S} visits history museums and historic sites whenever possible.",
            "{S} likes answers that give historical background.",
            "{S} asks about the history and origins of customs.",
            "{S} watches history documentaries about medieval Europe.",
        ),
    ),
    PlantedTrait(
        "parent",
        "situation",
        "is a parent of young children",
        1.5,
        (
            "{S} is a parent of two young children.",
            "{S} juggles work with raising young kids.",
            "{S} asks for activities suitable for {P} toddler.",
            "Parenting questions about {P} young children come up often.",
            "{S} is a busy parent who wants advice that fits a family schedule.",
            "{S} has small kids at home and little free time.",
            "{S} looks for child-friendly recipes and outings for {P} kids.",
            "{S} is a mother or father of a preschooler.",
        ),
    ),
    PlantedTrait(
        "student",
        "situation",
        "is a university student",
        1.5,
        (
            "{S} is a university student preparing for exams.",
            "{S} studies at college and writes essays for classes.",
            "{S} asks for help understanding lecture material for a university course.",
            "College coursework and exam deadlines take up much of {P} time.",
            "{S} is a student working toward a degree and needs study tips.",
            "{S} is an undergraduate student balancing classes and a part-time job.",
            "{S} wants explanations suited to homework for university classes.",
            "{S} is a student studying for final exams.",
        ),
        "age",
    ),
    PlantedTrait(
        "retiree",
        "situation",
        "is retired",
        1.0,
        (
            "{S} is retired and has plenty of free time.",
            "{S} stopped working a few years ago after a long career.",
            "{S} is a retiree who enjoys a slower pace of life.",
            "Retirement gives {O} time for hobbies and grandchildren.",
            "{S} lives on a pension and manages {P} savings carefully.",
            "{S} is in {P} seventies and no longer employed.",
            "{S} is adjusting to life after retirement.",
            "{S} volunteers now that {P} working years are over.",
        ),
        "age",
    ),
    PlantedTrait(
        "chronic_illness",
        "situation",
        "lives with a chronic illness",
        0.7,
        (
            "{S} lives with a chronic illness.",
            "{S} manages diabetes and watches {P} blood sugar.",
            "{S} has a long-term health condition that limits {P} energy.",
            "Chronic pain shapes how {S!l} plans {P} days.",
            "{S} deals with an autoimmune disease and frequent doctor visits.",
            "{S} needs advice that accounts for {P} medical condition.",
            "{S} takes daily medication for an ongoing illness.",
            "{S} copes with fatigue from a lasting health problem.",
        ),
    ),
    PlantedTrait(
        "small_business",
        "situation",
        "runs a small business",
        1.0,
        (
            "{S} runs a small business.",
            "{S} owns a local shop and handles its accounts.",
            "{S} is a self-employed entrepreneur with a few employees.",
            "Growing {P} company is a constant focus for {O}.",
            "{S} asks about marketing, invoices and customers for {P} firm.",
            "{S} manages a family-owned store.",
            "{S} started {P} own company and wears many hats.",
            "{S} needs advice on payroll and taxes for {P} business.",
        ),
    ),
    PlantedTrait(
        "non_native",
        "situation",
        "is a non-native English speaker",
        0.8,
        (
            "{S} is a non-native English speaker.",
            "English is {P} second language, so {S!l} prefers simple vocabulary.",
            "{S} is still learning English and avoids idioms.",
            "{S} wants plain wording because English is not {P} first language.",
            "{S} moved abroad and is improving {P} English.",
            "{S} sometimes translates answers into {P} native language.",
            "{S} finds complex English phrasing hard to follow.",
            "{S} grew up speaking Spanish and learned English as an adult.",
        ),
    ),
)

GENERIC_STATEMENTS: tuple[str, ...] = (
    "{S} values accurate and helpful answers.",
    "{S} appreciates responses that address the question asked.",
    "{S} wants information that is correct.",
    "{S} likes answers that are relevant to {P} needs.",
    "{S} expects the assistant to understand the question.",
    "{S} prefers useful responses over unhelpful ones.",
)

RARE_HOBBIES: tuple[str, ...] = tuple(
    "{S} " + hobby + "."
    for hobby in (
        "collects vintage fountain pens",
        "restores antique clocks",
        "breeds koi fish",
        "plays the bagpipes",
        "builds model ships in bottles",
        "practices competitive yo-yo tricks",
        "keeps bees on a rooftop",
        "carves wooden spoons",
        "studies medieval heraldry",
        "collects meteorites",
        "plays the theremin",
        "does competitive crossword solving",
        "raises alpacas",
        "makes stained glass windows",
        "restores vintage motorcycles",
        "collects rare stamps",
        "practices falconry",
        "brews kombucha at home",
        "knits sweaters for shelter dogs",
        "builds ham radios",
        "studies lichen",
        "plays competitive chess by mail",
        "forages for wild mushrooms",
        "binds books by hand",
        "performs stand-up comedy at open mics",
        "collects antique maps",
        "practices calligraphy",
        "builds birdhouses",
        "restores old pianos",
        "does underwater photography",
        "trains homing pigeons",
        "writes haiku every morning",
        "collects snow globes",
        "plays the accordion in a polka band",
        "makes candles from beeswax",
        "races remote-control cars",
        "practices archery",
        "paints miniature figurines",
        "collects vinyl records",
        "does glassblowing",
        "keeps a saltwater aquarium",
        "builds treehouses",
        "plays handbells at church",
        "practices fencing",
        "sews historical costumes",
        "collects seashells",
        "does ice sculpture",
        "grows bonsai trees",
        "solves Rubik's cubes blindfolded",
        "weaves baskets",
        "does letterpress printing",
        "restores classic cars",
        "juggles flaming torches",
        "collects comic books",
        "studies sign language",
        "builds robots from scrap",
        "dances the tango",
        "plays the harp",
        "makes cheese at home",
        "spins wool",
    )
)

# Optional framing around a statement, as persona writers add it; it varies the wording without changing the trait.
_PREFIXES: tuple[str, ...] = (
    "Generally, ",
    "In most conversations, ",
    "Above all, ",
    "Judging by the choices, ",
    "Clearly, ",
    "It seems that ",
    "From the preferences, it appears that ",
    "Consistently, ",
)
_SUFFIXES: tuple[str, ...] = (
    ", especially on busy days",
    " in most situations",
    ", as the chosen responses show",
    ", more than most people",
    " when asking for advice",
    ", based on past choices",
    " in everyday life",
    ", at least most of the time",
    ", judging by the selections",
    ", even for simple questions",
)

_REFERENTS: tuple[dict[str, str], ...] = (
    {"S": "The user", "S!l": "the user", "O": "the user", "P": "their", "P!c": "Their"},
    {
        "S": "This person",
        "S!l": "this person",
        "O": "this person",
        "P": "their",
        "P!c": "Their",
    },
    {"S": "She", "S!l": "she", "O": "her", "P": "her", "P!c": "Her"},
    {"S": "He", "S!l": "he", "O": "him", "P": "his", "P!c": "His"},
)


def _fill(template: str, referent: dict[str, str]) -> str:
    text = template
    for key in ("S!l", "P!c", "S", "O", "P"):
        text = text.replace("{" + key + "}", referent[key])
    return text


def _decorate(sentence: str, rng: random.Random) -> str:
    if rng.random() < 0.35:
        sentence = sentence.rstrip(".") + rng.choice(_SUFFIXES) + "."
    if rng.random() < 0.25:
        prefix = rng.choice(_PREFIXES)
        first_word = sentence.split(" ", 1)[0]
        keep_capital = first_word in {"English", "I"}
        sentence = prefix + (
            sentence if keep_capital else sentence[0].lower() + sentence[1:]
        )
    return sentence


def _join_clauses(first: str, second: str) -> str:
    """'She bakes bread.' + 'She wants tips.' -> 'She bakes bread, and she wants tips.'"""
    second = (
        second
        if second.startswith(("I ", "English"))
        else second[0].lower() + second[1:]
    )
    return first.rstrip(".") + ", and " + second


def _draw_weighted(rng: random.Random, traits: Sequence[PlantedTrait]) -> PlantedTrait:
    return rng.choices(list(traits), weights=[trait.weight for trait in traits], k=1)[0]


def generate_population(
    n_users: int = 300, seed: int = 0, join_probability: float = 0.25
) -> SyntheticPopulation:
    """Generate `n_users` synthetic personas with planted traits (see the module docstring for the design)."""
    rng = random.Random(seed)
    users: list[SyntheticUser] = []
    width = len(str(max(n_users - 1, 1)))
    for index in range(n_users):
        referent = rng.choice(_REFERENTS)
        dominant = _draw_weighted(rng, PLANTED_TRAITS)
        chosen = [dominant]
        for _ in range(rng.choice((2, 2, 3))):
            candidates = [
                trait
                for trait in PLANTED_TRAITS
                if trait not in chosen
                and not any(
                    trait.exclusive_group and trait.exclusive_group == c.exclusive_group
                    for c in chosen
                )
            ]
            chosen.append(_draw_weighted(rng, candidates))
        sentences = [
            _fill(template, referent) for template in rng.sample(dominant.templates, 2)
        ]
        sentences += [
            _fill(rng.choice(trait.templates), referent) for trait in chosen[1:]
        ]
        if rng.random() < 0.5:
            sentences.append(_fill(rng.choice(GENERIC_STATEMENTS), referent))
        if rng.random() < 0.35:
            sentences.append(_fill(rng.choice(RARE_HOBBIES), referent))
        sentences = [_decorate(sentence, rng) for sentence in sentences]
        rng.shuffle(sentences)
        joined: list[str] = []
        for sentence in sentences:
            if (
                joined
                and rng.random() < join_probability
                and ", and " not in joined[-1]
            ):
                joined[-1] = _join_clauses(joined[-1], sentence)
            else:
                joined.append(sentence)
        persona = Persona(
            user_id=f"synthetic-{seed}-{index:0{width}d}", text=" ".join(joined)
        )
        users.append(
            SyntheticUser(persona, dominant.key, tuple(trait.key for trait in chosen))
        )
    return SyntheticPopulation(tuple(users), seed)


def _require_text(value: Any, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise PopulationFileError(
            f"{where}: field '{field}' must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise PopulationFileError(f"{where}: field '{field}' is empty")
    return value.strip()


def read_personas_jsonl(path: str | Path) -> list[Persona]:
    """Read one persona per line: {"user_id": ..., "persona": ...}. Optional "statements" (list of strings) are kept.

    Raises `PopulationFileError` naming the file, line and field on the first bad line, and on duplicate user ids.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise PopulationFileError(
            f"{path}: cannot read file ({error.strerror})"
        ) from error
    if b"\x00" in raw:
        raise PopulationFileError(f"{path}: binary file, expected JSON lines")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise PopulationFileError(
            f"{path}: not UTF-8 text (byte {error.start})"
        ) from error
    personas: list[Persona] = []
    first_line_of: dict[str, int] = {}
    lines = json_lines(text.splitlines(), lambda number, reason: PopulationFileError(f"{path}:{number}: {reason}"))
    for number, record in lines:
        where = f"{path}:{number}"
        if not isinstance(record, dict):
            raise PopulationFileError(
                f"{where}: expected a JSON object with 'user_id' and 'persona'"
            )
        for field in ("user_id", "persona"):
            if field not in record:
                raise PopulationFileError(f"{where}: missing field '{field}'")
        user_id = record["user_id"]
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        user_id = _require_text(user_id, where, "user_id")
        persona_text = _require_text(record["persona"], where, "persona")
        if user_id in first_line_of:
            raise PopulationFileError(
                f"{where}: field 'user_id' repeats {user_id!r} from line {first_line_of[user_id]}"
            )
        first_line_of[user_id] = number
        statements = record.get("statements", [])
        if not isinstance(statements, list) or not all(
            isinstance(s, str) for s in statements
        ):
            raise PopulationFileError(
                f"{where}: field 'statements' must be a list of strings"
            )
        personas.append(
            Persona(
                user_id, persona_text, tuple(s.strip() for s in statements if s.strip())
            )
        )
    if not personas:
        raise PopulationFileError(f"{path}: no personas found")
    return personas


def read_artifact(path: str | Path) -> tuple[Persona, dict[str, Any]]:
    """Read a saved SynthesizeMe artifact (JSON with top-level 'persona'); returns the persona and the artifact.

    The user id is the artifact's 'user_id' when present, otherwise the file name without its extension.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PopulationFileError(
            f"{path}: cannot read file ({error.strerror})"
        ) from error
    except UnicodeDecodeError as error:
        raise PopulationFileError(
            f"{path}: not UTF-8 text (byte {error.start})"
        ) from error
    except json.JSONDecodeError as error:
        raise PopulationFileError(
            f"{path}:{error.lineno}: not valid JSON ({error.msg})"
        ) from error
    if not isinstance(document, dict):
        raise PopulationFileError(
            f"{path}:1: expected a JSON object with a top-level 'persona'"
        )
    if "persona" not in document:
        raise PopulationFileError(f"{path}:1: missing field 'persona'")
    persona_text = _require_text(document["persona"], f"{path}:1", "persona")
    user_id = document.get("user_id", path.stem)
    user_id = _require_text(
        str(user_id) if isinstance(user_id, int) else user_id, f"{path}:1", "user_id"
    )
    return Persona(user_id, persona_text), document


def write_personas_jsonl(personas: Iterable[Persona], path: str | Path) -> None:
    """Write personas as JSON lines (user_id, persona) atomically."""
    lines = [
        json.dumps({"user_id": p.user_id, "persona": p.text}, ensure_ascii=False)
        for p in personas
    ]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")


def planted_trait_recovery(
    population: SyntheticPopulation, result: InsightsResult
) -> dict[str, float]:
    """For each planted trait, the best Jaccard overlap between its users and the users of any shown insight
    (a trait counts as recovered at >= 0.5)."""
    insight_users = [set(insight.user_ids) for insight in result.leaves]
    best: dict[str, float] = {}
    for trait in PLANTED_TRAITS:
        truth = population.users_with_trait(trait.key)
        best[trait.key] = max(
            (
                len(truth & users) / len(truth | users)
                for users in insight_users
                if truth | users
            ),
            default=0.0,
        )
    return best


def dominant_trait_ari(
    population: SyntheticPopulation, result: InsightsResult
) -> float:
    """Adjusted Rand index between each user's dominant planted trait and the shown insight holding most of the
    user's statements (ties go to the smaller insight; a user in no shown insight forms a group of one)."""
    from sklearn.metrics import adjusted_rand_score

    sizes = {insight.id: insight.n_users for insight in result.leaves}
    per_user: dict[str, Counter[str]] = {}
    for statement in result.statements:
        if statement.insight_id is not None:
            per_user.setdefault(statement.user_id, Counter())[statement.insight_id] += 1
    truth, predicted = [], []
    for user in population.users:
        counts = per_user.get(user.persona.user_id)
        if counts:
            top = max(counts.values())
            predicted.append(
                min(
                    (i for i, c in counts.items() if c == top),
                    key=lambda i: (sizes[i], i),
                )
            )
        else:
            predicted.append(f"alone:{user.persona.user_id}")
        truth.append(user.dominant_trait)
    return float(adjusted_rand_score(truth, predicted))
