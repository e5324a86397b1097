"""Split personas into atomic trait statements.

A persona mixes facets (style, values, topics, life situation); embedding it whole blends them. We cluster single
statements instead. `SentenceSplitter` always works: it reads plain prose and the markdown instruction-tuned models
write (headings, numbered and bulleted lists, `**Label**: text` items, bold), keeps an item's label with its text
(the label is part of the meaning), drops framing that says nothing about the user (headlines, "The synthesized
persona is...", "...as follows:", closing "Overall, ..." summaries, which restate the traits listed before them),
and splits fused sentences into their facets. `persona_statements(text)` is the one call other modules use (the
fidelity ratings rate the same statements the insights pipeline clusters). `LLMFacetExtractor` asks any `dspy.LM`
to rewrite a persona as self-contained trait statements when a capable model is configured.
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
_BULLET = re.compile(r"^\s*(?:[-*+\u2022\u2013]|\(?\d+[.)]|[a-z][.)])\s+")
_HEADING = re.compile(r"^\s*(?:#{1,6}\s|>\s*#)")
_EMPHASIS = re.compile(r"(\*\*|__|\*|`)")
# "**Label**: text", "**Label:** text", "**Label** - text", "Label: text" (a label is at most six words).
_BOLD_LABEL = re.compile(
    r"^(?:\*\*|__)(?P<label>[^*_]{1,80}?)\s*:?\s*(?:\*\*|__)\s*(?:[:\u2013\u2014-]\s*)?(?P<text>.*)$"
)
_PLAIN_LABEL = re.compile(r"^(?P<label>[A-Z][\w'&/-]*(?:\s+[\w'&/-]+){0,5})\s*:\s+(?P<text>\S.*)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
# Framing: about the persona document, not the user. A sentence that introduces a list ("...:"), the meta
# openers models write, and summaries (which restate what the persona already listed).
_FRAMING = re.compile(
    r"^(?:(?:the|this) (?:synthesi[sz]ed|generated|following|resulting) (?:user )?(?:persona|profile)\b|"
    r"(?:here|below) (?:is|are)\b|the following\b|"
    r"(?:this|the) (?:persona|profile) (?:captures|describes|summari[sz]es|reflects|outlines|is based)\b)"
    r"|\bas follows\b",
    re.IGNORECASE,
)
_SUMMARY = re.compile(
    r"^(?:overall|in summary|in short|in sum|to summari[sz]e|to sum up|in conclusion|all in all|taken together|"
    r"altogether|in essence)\b",
    re.IGNORECASE,
)
# Clause boundaries that usually join two independent facets: "X; Y", "X, and Y", "X, while Y", "X and she Y",
# and a coordinated predicate: "X and keeps bees", "X, rides a bike and ..." (a verb in -s, or is/has/was/does;
# not a plural noun followed by "and", "that", "of", ...).
_PREDICATE = (
    r"(?:(?:also|often|still|now|regularly|usually)\s+)?"
    r"(?:(?:is|has|was|does)\s|[a-z]+[^siu\W]s\s+(?!(?:and|or|that|which|who|of|for)\b)[\w(])"
)
_CLAUSE_BOUNDARY = re.compile(
    r"\s*;\s+|,\s+(?:and|but|while|whereas|although|though|yet)\s+|"
    rf"\s+(?:and|but|while)\s+(?=(?:she|he|they)\s)|(?:,\s+|\s+(?:and|but|while)\s+)(?={_PREDICATE})",
    re.IGNORECASE,
)
# A coordinated predicate that refers back to the one before it ("writes songs and records them at home",
# "bought an old house and is renovating it") continues that facet; cut off, it means nothing on its own.
_ANAPHORIC_PREDICATE = re.compile(r"^(?:(?:she|he|they)\s+)?(?:\S+\s+){1,2}(?:it|them)\b", re.IGNORECASE)
_LEADING_CONNECTIVE = re.compile(
    r"^(?:additionally|also|moreover|furthermore|in addition|however|finally|lastly|"
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
    fragment = _LEADING_CONNECTIVE.sub("", fragment.strip().replace(_PROTECTED_DOT, "."))
    fragment = fragment.strip(" ,;:-\u2013\u2014")
    if not fragment:
        return ""
    fragment = fragment[0].upper() + fragment[1:]
    if fragment[-1] not in ".!?\"')":
        fragment += "."
    return fragment


def _labelled(line: str) -> tuple[str, str]:
    """A list item's label and text: ("Farm Life", "Lives on a farm.") for "**Farm Life:** Lives on a farm."."""
    match = _BOLD_LABEL.match(line)
    if match and match.group("text").strip():
        return match.group("label").strip(" :"), match.group("text")
    if match:  # a line that is bold and nothing else: a heading
        return match.group("label").strip(" :"), ""
    match = _PLAIN_LABEL.match(line)
    if match and not _SENTENCE_END.search(match.group("label") + " X"):
        return match.group("label"), match.group("text")
    return "", line


_SUBJECT = r"(?:the|this) (?:user|person|individual|persona)|they|she|he|user"
_FRAME = (
    r"(?:generally|overall|clearly|consistently|above all|in (?:most|many) (?:conversations|cases)|"
    r"it (?:seems|appears)(?: that)?|"
    r"[^,]{0,40}\b(?:choices|preferences|comparisons|selections|chosen responses|pairs|ratings|feedback|data)\b"
    r"[^,]{0,25},(?: it (?:seems|appears)(?: that)?)?)"
    r"\s*,?\s*"
)
_HEDGE = (
    r"(?:also|often|usually|generally|likely|clearly|really|strongly|particularly|probably|"
    r"tends to|seems to|appears to)"
)
_OWN_SUBJECT = re.compile(rf"^\s*(?:{_SUBJECT})\s", re.IGNORECASE)
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
_STATEMENT_LABEL = re.compile(r"^(?P<label>[^:.!?]{1,80}):\s+(?P<text>\S.*)$")


def _split_label(statement: str) -> tuple[str, str]:
    match = _STATEMENT_LABEL.match(statement.strip())
    return (match.group("label"), match.group("text")) if match else ("", statement)


def without_subject(statement: str) -> str:
    """'Judging by the choices, she likes short answers.' -> 'Likes short answers.' (used for names)."""
    label, text = _split_label(statement)
    core = _EVIDENCE_TAIL.sub("", _LEADING_SUBJECT.sub("", text.strip())).strip()
    core = _tidy(core) if len(core.split()) >= 2 else text
    return f"{label}: {core}" if label else core


def trait_core(statement: str) -> str:
    """The part of a statement that carries the trait, as the embedder sees it.

    Persona statements share boilerplate ("The user", "She", "Judging by the choices", "prefers", "..., as the
    chosen responses show"); a sentence encoder then groups statements by that boilerplate rather than by trait
    (measured on the generated population: k-means clusters formed by subject pronoun and by leading verb). We drop
    the subject, hedges, evidential tails and one leading preference verb, and make pronouns neutral. Negative verbs
    ("dislikes") are kept because they carry meaning, and so is an item's label ("Farm Life: ...").
    """
    label, text = _split_label(statement)
    core = _LEADING_SUBJECT.sub("", text.strip())
    core = _EVIDENCE_TAIL.sub("", _PREFERENCE_VERB.sub("", core))
    for pattern, replacement in _REFERENTS:
        core = pattern.sub(replacement, core)
    core = core.strip(" .")
    core = core if len(core.split()) >= 1 else text
    return f"{label}: {core}" if label else core


class SentenceSplitter:
    """Rule-based splitter: lines, list items and labels, then sentences, then independent clauses.

    A clause boundary is only used when both sides keep at least `min_clause_words` words (for predicates that share
    the sentence's subject, words besides that subject), and not before a predicate that refers back with "it" or
    "them". So "likes cooking and baking", "She values brevity and dislikes long-winded answers", "fixes punctures
    and tunes derailleurs" and "writes songs and records them" stay whole, while "She runs a bakery, and she wants
    short answers" and "She keeps two hives and plays chess online" become two statements. Headings, framing
    sentences and summaries are dropped (see the module docstring); a list item's label is kept in front of each
    statement of its text ("Farm Life: Lives on a farm."). Fragments shorter than `min_words` (label included) are
    dropped and exact repeats within a persona are removed.
    """

    def __init__(self, min_words: int = 3, min_clause_words: int = 3) -> None:
        self.min_words = min_words
        self.min_clause_words = min_clause_words

    def split(self, persona: str) -> list[str]:
        statements: list[str] = []
        seen: set[str] = set()
        for raw_line in _protect_abbreviations(persona).splitlines():
            if _HEADING.match(raw_line):
                continue
            label, line = _labelled(_BULLET.sub("", raw_line).strip())
            line = _EMPHASIS.sub("", line).strip()
            label = _EMPHASIS.sub("", label).strip()
            if not line or (line.endswith(":") and not label):
                continue
            for sentence in _SENTENCE_END.split(line):
                if _FRAMING.search(sentence) or _SUMMARY.match(sentence) or sentence.rstrip().endswith(":"):
                    continue
                for clause in self._split_clauses(sentence):
                    statement = _tidy(clause)
                    if label and statement:
                        statement = f"{label}: {statement}"
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
            if match.start() < start:
                continue
            left = sentence[start : match.start()]
            rest = sentence[match.end() :]
            if self._can_cut(match.group(0), left, rest):
                pieces.append(left)
                start = match.end()
        pieces.append(sentence[start:])
        return pieces


    def _can_cut(self, boundary: str, left: str, rest: str) -> bool:
        """Independent clauses (after a semicolon, or with a subject of their own) each need `min_clause_words`
        words; coordinated predicates share the sentence's subject, so each needs that many words besides it."""
        if _ANAPHORIC_PREDICATE.match(rest):
            return False
        if ";" not in boundary and not _OWN_SUBJECT.match(rest):
            left, rest = (_LEADING_SUBJECT.sub("", side.strip()) for side in (left, rest))
        return len(left.split()) >= self.min_clause_words and len(rest.split()) >= self.min_clause_words


def persona_statements(text: str) -> list[str]:
    """The trait statements of one persona, as the insights pipeline splits them by default (what a visitor rates
    and what the population's insights count)."""
    return SentenceSplitter().split(text)


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
