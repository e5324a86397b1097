"""synth.fidelity: visitors' "that's me / not me / not sure" ratings turned into fidelity figures."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from synth.fidelity import (
    ME,
    NOT_ME,
    UNSURE,
    Rating,
    Share,
    population_fidelity,
    statement_key,
    tally,
    visitor_fidelity,
    wilson_interval,
)
from synth.insights.types import Insight, InsightsResult, Statement


@pytest.mark.parametrize("successes, n", [(0, 1), (1, 2), (8, 10), (0, 10), (10, 10), (37, 120), (999, 1000)])
def test_wilson_interval_matches_scipy(successes, n):
    expected = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(successes, n)
    assert low == pytest.approx(expected.low, abs=1e-12) and high == pytest.approx(expected.high, abs=1e-12)
    assert 0.0 <= low <= successes / n <= high <= 1.0


def test_wilson_interval_narrows_with_more_data_and_widens_with_confidence():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson_interval(10, 10)[1] == 1.0
    small, large = wilson_interval(8, 10), wilson_interval(80, 100)
    assert large[1] - large[0] < small[1] - small[0]
    wide = wilson_interval(8, 10, confidence=0.99)
    assert wide[0] < small[0] and wide[1] > small[1]
    for bad in [(1, 0), (3, 2), (-1, 4)]:
        with pytest.raises(ValueError, match="successes"):
            wilson_interval(*bad)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 2, confidence=1.0)


def test_ratings_are_validated():
    with pytest.raises(ValueError, match="verdict must be one of me, not_me, unsure"):
        Rating("u1", "Likes short answers.", "yes")
    with pytest.raises(ValueError, match="statement"):
        Rating("u1", "  ", ME)
    with pytest.raises(ValueError, match="user_id"):
        Rating("", "Likes short answers.", ME)


def test_visitor_fidelity_leaves_unsure_out_of_the_share_and_keeps_the_last_rating():
    ratings = [Rating("v", "Likes short answers.", NOT_ME), Rating("v", "Enjoys cooking.", ME),
               Rating("v", "Values evidence.", UNSURE), Rating("v", "Works at night.", ME),
               Rating("v", "likes   short answers.", ME)]  # changed their mind about the first statement
    share = visitor_fidelity(ratings)
    assert (share.confirmed, share.rejected, share.unsure) == (3, 0, 1)
    assert share.decided == 3 and share.total == 4 and share.value == 1.0
    assert share.interval() == wilson_interval(3, 3)
    only_unsure = visitor_fidelity([Rating("v", "Values evidence.", UNSURE)])
    assert only_unsure.value is None and only_unsure.interval() is None and only_unsure.unsure == 1
    assert visitor_fidelity([]) == Share()
    with pytest.raises(ValueError, match="one visitor"):
        visitor_fidelity([Rating("a", "Likes tea.", ME), Rating("b", "Likes tea.", ME)])


def test_statement_key_ignores_case_and_spacing_only():
    assert statement_key("  Likes\tShort  answers. ") == statement_key("likes short answers.")
    assert statement_key("Likes short answers.") != statement_key("Likes long answers.")


# ---- population figures -------------------------------------------------------------------------------------------
def population(n_users: int = 6, floor: int = 3) -> InsightsResult:
    """Users u0..u{n-1}, each with a "brevity" statement (insight-0) and a "hobby" statement; the hobby statements of
    u0 and u1 form insight-1 (two users: a group the floor would hide); theme-0 holds both insights."""
    statements, brevity, hobby = [], [], []
    for user in range(n_users):
        brevity.append(len(statements))
        statements.append(Statement(len(statements), f"u{user}", "Prefers short answers.", 0.0, 0.0, "insight-0"))
        in_hobby = user < 2
        if in_hobby:
            hobby.append(len(statements))
        statements.append(Statement(len(statements), f"u{user}", f"Keeps bees number {user}.", 1.0, 1.0,
                                    "insight-1" if in_hobby else None))
    insights = (
        Insight("insight-0", "Brevity", "", ("short",), tuple(f"u{i}" for i in range(n_users)), tuple(brevity), 1.0,
                parent="theme-0"),
        Insight("insight-1", "Bees", "", ("bees",), ("u0", "u1"), tuple(hobby), 1.0, parent="theme-0"),
        Insight("theme-0", "Everything", "", (), tuple(f"u{i}" for i in range(n_users)), tuple(brevity + hobby), 1.0,
                children=("insight-0", "insight-1")),
    )
    return InsightsResult(insights, tuple(statements), tuple(f"u{i}" for i in range(n_users)), 0,
                          {"min_users": floor})


def test_population_fidelity_counts_consenting_visitors_per_insight_and_overall():
    result = population()
    ratings = [Rating("u0", "Prefers short answers.", ME), Rating("u1", "prefers short answers.", NOT_ME),
               Rating("u2", "Prefers short answers.", ME), Rating("u3", "Prefers short answers.", UNSURE),
               Rating("u4", "Prefers short answers.", ME),
               Rating("u0", "Keeps bees number 0.", ME), Rating("u1", "Keeps bees number 1.", ME),
               Rating("u2", "Keeps bees number 2.", NOT_ME),  # a statement in no insight: counts only overall
               Rating("u5", "Prefers short answers.", NOT_ME),  # not consenting: never counted
               Rating("u0", "Prefers short answers.", ME)]  # a repeat of the same verdict counts once
    figures = population_fidelity(ratings, consenting={"u0", "u1", "u2", "u3", "u4"}, insights=result)
    assert figures.min_users == 3  # the floor the insights were fitted with
    assert figures.n_users == 4  # u3 only said "not sure"
    assert figures.overall == Share(confirmed=5, rejected=2, unsure=1)
    # each visitor once: u0 2/2, u1 1/2, u2 1/2, u4 1/1
    assert figures.mean_visitor_fidelity == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    brevity = figures.get("insight-0")
    assert brevity.n_users == 4 and brevity.share == Share(3, 1, 1) and brevity.name == "Brevity"
    assert figures.get("insight-1") is None and figures.hidden_insights == 1  # two raters: under the floor
    theme = figures.get("theme-0")
    assert theme.share == Share(5, 1, 1) and theme.n_users == 4
    assert [item.insight_id for item in figures.insights] == ["insight-0", "theme-0"]


def test_population_fidelity_withholds_everything_under_the_floor():
    result = population()
    ratings = [Rating(f"u{i}", "Prefers short answers.", ME) for i in range(6)]
    figures = population_fidelity(ratings, consenting={"u0", "u1"}, insights=result)
    assert figures.n_users == 2 and figures.overall is None and figures.mean_visitor_fidelity is None
    assert figures.insights == () and figures.hidden_insights == 2  # insight-0 and its theme; bees: no ratings
    lowered = population_fidelity(ratings, consenting={"u0", "u1"}, insights=result, min_users=2)
    assert lowered.overall == Share(2, 0, 0) and lowered.get("insight-0").n_users == 2
    assert population_fidelity(ratings, consenting=set(), insights=result).n_users == 0


def test_population_fidelity_without_insights_needs_an_explicit_floor():
    ratings = [Rating(f"u{i}", "Prefers short answers.", ME if i % 2 else NOT_ME) for i in range(4)]
    figures = population_fidelity(ratings, consenting={f"u{i}" for i in range(4)}, min_users=4)
    assert figures.overall == Share(2, 2, 0) and figures.insights == () and figures.mean_visitor_fidelity == 0.5
    with pytest.raises(ValueError, match="needs min_users"):
        population_fidelity(ratings, consenting={"u0"})
    with pytest.raises(ValueError, match="at least 1"):
        population_fidelity(ratings, consenting={"u0"}, min_users=0)


def test_tally_of_many_people_keeps_each_persons_last_word():
    ratings = [Rating("a", "Likes tea.", ME), Rating("b", "Likes tea.", NOT_ME), Rating("a", "Likes tea.", UNSURE)]
    assert tally(ratings) == Share(confirmed=0, rejected=1, unsure=1)
