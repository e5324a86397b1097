"""Split personas into atomic trait statements.

A persona paragraph mixes facets (style, values, topics, life situation); embedding it whole blends them. We cluster
single statements instead. `SentenceSplitter` always works (sentences, bullet lines, and independent clauses);
`LLMFacetExtractor` asks any `dspy.LM` to rewrite a persona as self-contained trait statements when a capable model
is configured.
"""

from __future__ import annotations

import re

import dspy

_ABBREVIATIONS = (
    "e.g.",
    "i.e.",
    "etc.",
    "vs.",
    "Dr.",
    "Mr.",
    "Mrs.",
    "Ms.",
    "St.",
    "U.S.",
    "U.K.",
    "approx.",
    "a.m.",
    "p.m.",
)
_PROTECTED_DOT = "\u2024"  # one-dot leader: stands in for abbreviation dots while splitting sentences
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2013]|\d+[.)])\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
# Clause boundaries that usually join two independent facets: "X; Y", "X, and Y", "X, but Y", "X, while Y".
_CLAUSE_BOUNDARY = re.compile(
    r"\s*;\s+|,\s+(?:and|but|while|whereas|although|though|yet)\s+", re.IGNORECASE
)
_LEADING_CONNECTIVE = re.compile(
    r"^(?:additionally|also|moreover|furthermore|in addition|overall|however|finally|lastly|"
    r"importantly|notably)\s*,?\s+",
    re.IGNORECASE,
)


def _protect_abbreviations(text: str) -> str:
    for abbreviation in _ABBREVIATIONS:
        text = re.sub(
            r"(?<![\w.])" + re.escape(abbreviation),
            abbreviation.replace(".", _PROTECTED_DOT),
            text,
        )
    return text


def _tidy(fragment: str) -> str:
    fragment = _LEADING_CONNECTIVE.sub(
        "", fragment.strip().replace(_PROTECTED_DOT, ".")
    )
    fragment = fragment.strip(" ,;:-\u2013\u2014")
    if not fragment:
        return ""
    fragment = fragment[0].upper() + fragment[1:]
    if fragment[-1] not in ".!?\"')":
        fragment += "."
    return fragment


_SUBJECT = r"(?:the|this|that) (?:user|person|individual)|they|she|he|user"
_FRAME = (
    r"(?:generally|overall|clearly|consistently|above all|in (?:most|many) (?:conversations|cases)|"
    r"it (?:seems|appears)(?: that)?|(?:based on|judging by|from) [^,]{1,40},(?: it (?:seems|appears)(?: that)?)?)"
    r"\s*,?\s*"
)
_HEDGE = (
    r"(?:also|often|usually|generally|likely|clearly|really|strongly|particularly|probably|"
    r"tends to|seems to|appears to)"
)
_LEADING_SUBJECT = re.compile(
    rf"^(?:{_FRAME})*(?:(?:{_SUBJECT})\s+)?(?:{_HEDGE}\s+)*", re.IGNORECASE
)
_PREFERENCE_VERB = re.compile(
    r"^(?:prefers?|values?|likes?|wants?|appreciates?|enjoys?|favou?rs?|expects?|looks for|asks for|cares about|"
    r"is interested in)\s+",
    re.IGNORECASE,
)
_EVIDENCE_TAIL = re.compile(
    r",?\s*(?:as (?:the|their|his|her) [^,]*?shows?|based on [^,]*|judging by [^,]*|according to [^,]*)\s*(?=[.!?]?$)",
    re.IGNORECASE,
)
_REFERENTS = (
    (re.compile(r"\b(?:the|this) (?:user|person|individual)\b", re.IGNORECASE), "them"),
    (re.compile(r"\b(?:she|he)\b", re.IGNORECASE), "they"),
    (re.compile(r"\b(?:her|his)\b", re.IGNORECASE), "their"),
    (re.compile(r"\bhim\b", re.IGNORECASE), "them"),
)


def without_subject(statement: str) -> str:
    """'Judging by the choices, she likes short answers.' -> 'Likes short answers.' (used for names)."""
    core = _EVIDENCE_TAIL.sub("", _LEADING_SUBJECT.sub("", statement.strip())).strip()
    return _tidy(core) if len(core.split()) >= 2 else statement


def trait_core(statement: str) -> str:
    """The part of a statement that carries the trait, as the embedder sees it.

    Persona statements share boilerplate ("The user", "She", "Judging by the choices", "prefers", "..., as the
    chosen responses show"); a sentence encoder then groups statements by that boilerplate rather than by trait
    (measured on the generated population: k-means clusters formed by subject pronoun and by leading verb). We drop
    the subject, hedges, evidential tails and one leading preference verb, and make pronouns neutral. Negative verbs
    ("dislikes") are kept because they carry meaning.
    """
    core = _LEADING_SUBJECT.sub("", statement.strip())
    core = _EVIDENCE_TAIL.sub("", _PREFERENCE_VERB.sub("", core))
    for pattern, replacement in _REFERENTS:
        core = pattern.sub(replacement, core)
    core = core.strip(" .")
    return core if len(core.split()) >= 1 else statement


class SentenceSplitter:
    """Rule-based splitter: lines and bullets, then sentences, then independent clauses.

    A clause boundary is only used when both sides keep at least `min_clause_words` words, so "likes cooking and
    baking" stays whole while "She runs a bakery, and she wants short answers" becomes two statements. Fragments
    shorter than `min_words` are dropped and exact repeats within a persona are removed.
    """

    def __init__(self, min_words: int = 3, min_clause_words: int = 3) -> None:
        self.min_words = min_words
        self.min_clause_words = min_clause_words

    def split(self, persona: str) -> list[str]:
        statements: list[str] = []
        seen: set[str] = set()
        for line in _protect_abbreviations(persona).splitlines():
            line = _BULLET.sub("", line).strip()
            if not line:
                continue
            for sentence in _SENTENCE_END.split(line):
                for clause in self._split_clauses(sentence):
                    statement = _tidy(clause)
                    key = statement.lower()
                    if len(statement.split()) >= self.min_words and key not in seen:
                        seen.add(key)
                        statements.append(statement)
        return statements

    def _split_clauses(self, sentence: str) -> list[str]:
        # Walk boundaries left to right, cutting only where both sides are long enough to stand alone.
        pieces: list[str] = []
        start = 0
        for match in _CLAUSE_BOUNDARY.finditer(sentence):
            left = sentence[start : match.start()]
            rest = sentence[match.end() :]
            if (
                len(left.split()) >= self.min_clause_words
                and len(rest.split()) >= self.min_clause_words
            ):
                pieces.append(left)
                start = match.end()
        pieces.append(sentence[start:])
        return pieces


class _PersonaFacets(dspy.Signature):
    """Rewrite a user persona as a list of short, self-contained trait statements. Each statement names exactly one
    facet of the user (a style preference, a value, a topic of interest, or a life situation), keeps the persona's
    meaning without adding anything, and starts with "The user"."""

    persona: str = dspy.InputField(desc="persona paragraph describing one user")
    statements: list[str] = dspy.OutputField(
        desc="one trait per statement, 3 to 25 words each"
    )


class LLMFacetExtractor:
    """Facet extraction with any `dspy.LM`. Falls back to `SentenceSplitter` if the model returns nothing usable,
    so a weak model can never empty a persona."""

    def __init__(self, lm: dspy.LM, fallback: SentenceSplitter | None = None) -> None:
        self.lm = lm
        self.fallback = fallback or SentenceSplitter()
        self._predict = dspy.Predict(_PersonaFacets)

    def split(self, persona: str) -> list[str]:
        with dspy.context(lm=self.lm):
            prediction = self._predict(persona=persona)
        statements: list[str] = []
        for raw in prediction.statements or []:
            statement = _tidy(str(raw))
            if (
                len(statement.split()) >= self.fallback.min_words
                and statement not in statements
            ):
                statements.append(statement)
        return statements or self.fallback.split(persona)
