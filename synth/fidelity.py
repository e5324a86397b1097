"""Persona fidelity from visitors' own ratings: "that's me", "not me" or "not sure" for each trait statement.

A visitor's fidelity is the share of their decided ratings that say "that's me"; "not sure" is counted and shown but
left out of the share, because it says neither that the persona is right nor that it is wrong. Population figures
(per insight, and overall) use only visitors who consented to share, and, like the insights themselves, are not
reported for groups of fewer than the privacy floor's number of visitors: a figure over two people would tell each of
them how the other answered. Every share comes with a Wilson score interval, which stays inside [0, 1] and behaves
on the small counts a single visitor produces. The functions are pure: ratings in, figures out; storing ratings is
the caller's business (the app keeps them in ``synth.store``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from statistics import NormalDist, mean

from synth.insights.types import InsightsResult

ME, NOT_ME, UNSURE = "me", "not_me", "unsure"
VERDICTS = (ME, NOT_ME, UNSURE)


@dataclass(frozen=True)
class Rating:
    """One person's verdict on one statement of their own persona."""

    user_id: str
    statement: str
    verdict: str  # one of VERDICTS

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, str) or not self.user_id.strip():
            raise ValueError("rating: user_id must be a non-empty string")
        if not isinstance(self.statement, str) or not self.statement.strip():
            raise ValueError(f"rating of {self.user_id}: statement must be a non-empty string")
        if self.verdict not in VERDICTS:
            raise ValueError(f"rating of {self.user_id}: verdict must be one of {', '.join(VERDICTS)}, "
                             f"got {self.verdict!r}")

    @property
    def key(self) -> tuple[str, str]:
        """Who rated which statement: a later rating with the same key replaces an earlier one."""
        return self.user_id, statement_key(self.statement)


def statement_key(text: str) -> str:
    """A statement as matched between ratings and insights: case and runs of whitespace do not matter."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a share of ``successes`` out of ``n``."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends: no rounding residue at 0 or n
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Share:
    """Counts of "that's me", "not me" and "not sure"; the share is confirmed / (confirmed + rejected)."""

    confirmed: int = 0
    rejected: int = 0
    unsure: int = 0

    @property
    def decided(self) -> int:
        return self.confirmed + self.rejected

    @property
    def total(self) -> int:
        return self.decided + self.unsure

    @property
    def value(self) -> float | None:
        """The share of decided ratings that confirm; None when nothing was decided."""
        return self.confirmed / self.decided if self.decided else None

    def interval(self, confidence: float = 0.95) -> tuple[float, float] | None:
        """Wilson interval of :attr:`value`; None when nothing was decided."""
        return wilson_interval(self.confirmed, self.decided, confidence) if self.decided else None


def tally(ratings: Iterable[Rating]) -> Share:
    """Count verdicts, keeping only the last rating of each (person, statement)."""
    latest = latest_ratings(ratings)
    verdicts = [rating.verdict for rating in latest.values()]
    return Share(verdicts.count(ME), verdicts.count(NOT_ME), verdicts.count(UNSURE))


def latest_ratings(ratings: Iterable[Rating]) -> dict[tuple[str, str], Rating]:
    """The last rating of each (person, statement), in order of first appearance."""
    latest: dict[tuple[str, str], Rating] = {}
    for rating in ratings:
        latest[rating.key] = rating
    return latest


def visitor_fidelity(ratings: Iterable[Rating]) -> Share:
    """One visitor's fidelity: their verdicts on their own persona's statements."""
    ratings = list(ratings)
    users = {rating.user_id for rating in ratings}
    if len(users) > 1:
        raise ValueError(f"visitor_fidelity takes one visitor's ratings; got {len(users)} visitors")
    return tally(ratings)


@dataclass(frozen=True)
class InsightConfirmation:
    """How often the members of one insight confirmed the statements of theirs that fall in it."""

    insight_id: str
    name: str
    n_users: int  # consenting members with at least one decided rating in this insight
    share: Share


@dataclass(frozen=True)
class PopulationFidelity:
    """Fidelity across consenting visitors. Figures over fewer than ``min_users`` visitors are withheld: ``overall``
    and ``mean_visitor_fidelity`` are then None, and such insights are only counted in ``hidden_insights``."""

    min_users: int
    n_users: int  # consenting visitors with at least one decided rating
    overall: Share | None  # every decided rating of those visitors pooled
    mean_visitor_fidelity: float | None  # each visitor's fidelity counted once
    insights: tuple[InsightConfirmation, ...]  # in the order of InsightsResult.insights
    hidden_insights: int  # insights with ratings from fewer than min_users visitors

    def get(self, insight_id: str) -> InsightConfirmation | None:
        return next((item for item in self.insights if item.insight_id == insight_id), None)


def population_fidelity(ratings: Iterable[Rating], consenting: Collection[str],
                        insights: InsightsResult | None = None, min_users: int | None = None) -> PopulationFidelity:
    """Per-insight and overall confirmation over the ratings of ``consenting`` user ids.

    A statement counts for an insight when it is one of the insight's member statements (``Insight.statements``;
    themes included) and its own author rated it. ``min_users`` defaults to the privacy floor ``insights`` was fitted
    with (``params["min_users"]``), so the figures are withheld exactly where the insights would be.
    """
    if min_users is None:
        if insights is None or "min_users" not in insights.params:
            raise ValueError("population_fidelity needs min_users (or an InsightsResult that records its floor)")
        min_users = int(insights.params["min_users"])
    if min_users < 1:
        raise ValueError(f"min_users must be at least 1, got {min_users}")
    consenting = set(consenting)
    latest = {key: rating for key, rating in latest_ratings(ratings).items() if rating.user_id in consenting}
    by_user: dict[str, list[Rating]] = {}
    for rating in latest.values():
        by_user.setdefault(rating.user_id, []).append(rating)
    visitors = {user: tally(user_ratings) for user, user_ratings in by_user.items()}
    visitors = {user: share for user, share in visitors.items() if share.decided}
    shown = len(visitors) >= min_users
    overall = tally(latest.values()) if shown else None
    mean_fidelity = mean(share.value for share in visitors.values()) if shown else None
    confirmations: list[InsightConfirmation] = []
    hidden = 0
    for insight in insights.insights if insights is not None else ():
        members = [latest.get((statement.user_id, statement_key(statement.text)))
                   for statement in (insights.statements[index] for index in insight.statements)]
        members = [rating for rating in members if rating is not None]
        raters = {rating.user_id for rating in members if rating.verdict != UNSURE}
        if not raters:
            continue
        if len(raters) < min_users:
            hidden += 1
            continue
        confirmations.append(InsightConfirmation(insight.id, insight.name, len(raters), tally(members)))
    return PopulationFidelity(min_users, len(visitors), overall, mean_fidelity, tuple(confirmations), hidden)
