"""Name clusters: from their most central statement (always) or with an LLM, contrasted with nearest non-members.

A namer has one method, `name(groups) -> list[GroupName]`. Each `GroupToName` carries member statements (most
central first), c-TF-IDF keywords, and statements of the nearest *other* groups, so a name can say what sets the
group apart (as Clio does). Namers return names that are distinct across groups.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import dspy

from synth.insights.splitting import without_subject


@dataclass(frozen=True)
class GroupToName:
    members: tuple[str, ...]
    keywords: tuple[str, ...]
    neighbors: tuple[str, ...]
    n_users: int


@dataclass(frozen=True)
class GroupName:
    name: str
    description: str


class Namer(Protocol):
    def name(self, groups: Sequence[GroupToName]) -> list[GroupName]: ...


def _normalized(name: str) -> str:
    return " ".join(name.lower().strip(" .").split())


def _words(text: str) -> set[str]:
    return {word.strip(".,;:!?\"'").lower() for word in text.split()} - {""}


def _varied(title: str, candidates: Sequence[str], count: int) -> list[str]:
    """Up to `count` candidates that are not rewordings of the title or of each other (< 60% shared words)."""
    chosen: list[str] = []
    for candidate in candidates:
        words = _words(candidate)
        if all(
            len(words & _words(other)) < 0.6 * min(len(words), len(_words(other)))
            for other in [title, *chosen]
        ):
            chosen.append(candidate)
        if len(chosen) == count:
            break
    return chosen


def _quote_list(statements: Sequence[str]) -> str:
    return "; ".join(f"\u201c{statement}\u201d" for statement in statements)


def _label(statement: str) -> str:
    """The list-item label a statement carries ("Farm Life" of "Farm Life: Lives on a farm."), or ""."""
    head, separator, _ = statement.partition(": ")
    return head.strip() if separator and len(head.split()) <= 6 else ""


class CentralStatementNamer:
    """Names a group from its members' own words, skipping names already used.

    When at least `label_share` of the distinct members carry a list-item label (personas written as
    `**Label**: text` items), the name is the members' most common label: the persona writers' own summary of the
    trait. Otherwise, of the `pool` most central distinct statements the shortest is taken (without its subject),
    which drops incidental qualifiers ("..., especially on busy days"). Real wording from members is specific and
    never invents anything; the description quotes two more members that say something in other words.
    """

    def __init__(self, pool: int = 3, label_share: float = 0.5) -> None:
        self.pool = pool
        self.label_share = label_share

    def _title(self, group: GroupToName, candidates: list[str], used: set[str]) -> str:
        labels = Counter(label for label in map(_label, group.members) if label)
        if sum(labels.values()) >= self.label_share * len(group.members):
            for label, _ in labels.most_common():
                if _normalized(label) not in used:
                    return label
        free = [c for c in candidates if _normalized(c) not in used]
        if free:
            return min(free[: self.pool], key=len)
        return f"{candidates[0].rstrip('.')} ({', '.join(group.keywords[:2])})"

    def name(self, groups: Sequence[GroupToName]) -> list[GroupName]:
        used: set[str] = set()
        names: list[GroupName] = []
        for group in groups:
            candidates = list(
                dict.fromkeys(without_subject(s) for s in group.members)
            ) or [", ".join(group.keywords)]
            title = self._title(group, candidates, used)
            used.add(_normalized(title))
            others = _varied(title, candidates, 2)
            quoted = _quote_list(others) if others else _quote_list([title])
            description = (
                f"Members also say, for example: {quoted}"
                if others
                else f"Members say: {quoted}"
            )
            names.append(GroupName(title.rstrip("."), description))
        return names


class ChildNamesThemeNamer:
    """Names a theme after its largest child insights (the members passed in are the children's names)."""

    def __init__(self, shown: int = 2, max_words: int = 7) -> None:
        self.shown = shown
        self.max_words = max_words

    def _short(self, name: str) -> str:
        words = name.split()
        return (
            name
            if len(words) <= self.max_words
            else " ".join(words[: self.max_words]) + "…"
        )

    def name(self, groups: Sequence[GroupToName]) -> list[GroupName]:
        names = []
        for group in groups:
            shown = [self._short(child) for child in group.members[: self.shown]]
            rest = len(group.members) - len(shown)
            title = " / ".join(shown) + (f" (+{rest} more)" if rest > 0 else "")
            keywords = ", ".join(group.keywords[:5])
            names.append(
                GroupName(
                    title,
                    f"A broader theme of {len(group.members)} insights; keywords: {keywords}.",
                )
            )
        return names


class _NameGroup(dspy.Signature):
    """Name a group of trait statements taken from user personas. The name (at most 8 words) must say what the
    members share and what sets them apart from the nearby statements of other groups; be specific, not generic.
    Do not reuse any of the names already taken. The description is one sentence about these users."""

    members: list[str] = dspy.InputField(desc="statements from members of the group")
    nearby_non_members: list[str] = dspy.InputField(
        desc="similar statements from other groups, for contrast"
    )
    keywords: list[str] = dspy.InputField(desc="distinctive words of the group")
    names_taken: list[str] = dspy.InputField(
        desc="names of other groups; choose a different name"
    )
    name: str = dspy.OutputField(desc="short, specific group name")
    description: str = dspy.OutputField(
        desc="one sentence describing what these users share"
    )


class LLMNamer:
    """Clio-style names with any `dspy.LM`: members contrasted with nearest non-members, de-duplicated.

    Groups are named largest first; each call sees the names already taken. A name the model still repeats, or an
    empty answer, falls back to the central-statement name so every group keeps a distinct name.
    """

    def __init__(
        self, lm: dspy.LM, max_members: int = 20, max_neighbors: int = 10
    ) -> None:
        self.lm = lm
        self.max_members = max_members
        self.max_neighbors = max_neighbors
        self._predict = dspy.Predict(_NameGroup)
        self._fallback = CentralStatementNamer()

    def name(self, groups: Sequence[GroupToName]) -> list[GroupName]:
        fallback = self._fallback.name(groups)
        order = sorted(range(len(groups)), key=lambda i: -groups[i].n_users)
        names: dict[int, GroupName] = {}
        taken: list[str] = []
        with dspy.context(lm=self.lm):
            for index in order:
                group = groups[index]
                prediction = self._predict(
                    members=list(group.members[: self.max_members]),
                    nearby_non_members=list(group.neighbors[: self.max_neighbors]),
                    keywords=list(group.keywords),
                    names_taken=list(taken),
                )
                name = " ".join(str(prediction.name or "").split()).strip(" .\"'")
                description = " ".join(str(prediction.description or "").split())
                if not name or _normalized(name) in {_normalized(t) for t in taken}:
                    name, description = (
                        fallback[index].name,
                        description or fallback[index].description,
                    )
                    if _normalized(name) in {_normalized(t) for t in taken}:
                        name = f"{name} ({', '.join(group.keywords[:2])})"
                names[index] = GroupName(
                    name, description or fallback[index].description
                )
                taken.append(name)
        return [names[index] for index in range(len(groups))]
