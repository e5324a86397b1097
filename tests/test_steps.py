"""synth.steps: settings resolution, scoring a pair in both orderings, and what feeds the persona."""

from __future__ import annotations

import dspy
import pytest

from synth.judge import Judgment, PairwiseJudge
from synth.signatures import TolerantChatAdapter
from synth.steps import (
    BOOTSTRAPPED,
    LABELS_ONLY,
    QUICK,
    Candidate,
    PairScore,
    StepSettings,
    Trace,
    judge_both_orders,
    traces_for_persona,
)
from tests.scripted import make_pairs, scripted_lm


def test_resolve_applies_defaults_then_quick_then_explicit_values():
    assert StepSettings.resolve() == StepSettings()
    assert StepSettings.resolve(num_candidates=None, seed=None) == StepSettings()  # None means "not given"
    quick = StepSettings.resolve(quick=True)
    assert {name: getattr(quick, name) for name in QUICK} == QUICK
    mixed = StepSettings.resolve(quick=True, num_candidates=7, reasoning_tokens=256, num_threads=3)
    assert (mixed.num_candidates, mixed.max_demos, mixed.reasoning_tokens, mixed.persona_tokens,
            mixed.num_threads) == (7, 2, 256, 120, 3)


def judgment(preferred: str, p_first: float | None = None, source: str = "parsed") -> Judgment:
    return Judgment(preferred, p_first, "because", source)


def test_pair_score_from_two_judgments():
    right_both = PairScore.of(judgment("First", 0.9), judgment("Second", 0.3))
    assert right_both.score == 1.0 and right_both.p_correct == pytest.approx(0.8)
    biased = PairScore.of(judgment("First"), judgment("First", source="fallback"))  # always says First
    assert biased.score == 0.5 and biased.p_correct == 0.5 and biased.verdict_fallbacks == 1
    assert (biased.correct_chosen_first, biased.correct_chosen_second) == (True, False)
    wrong = PairScore.of(judgment("Second", 0.4), judgment("First", 0.6))
    assert wrong.score == 0.0 and wrong.p_correct == pytest.approx(0.4)


def test_judge_both_orders_shows_the_chosen_reply_first_then_second():
    lm, engine = scripted_lm()
    pair = make_pairs(1)[0]
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        first, second = judge_both_orders(PairwiseJudge(), pair, 2000)
    assert [order[:2] for order in engine.seen_orders] == [(pair.chosen.content, pair.rejected.content),
                                                           (pair.rejected.content, pair.chosen.content)]
    assert (first.preferred, second.preferred) == ("First", "Second")  # the short reply, wherever it is shown
    assert PairScore.of(first, second).p_correct == pytest.approx(0.8)


def trace(index: int, kept: bool) -> Trace:
    return Trace("bootstrap", index, True, f"reason {index}", "First", "First" if kept else "Second", kept, None,
                 "parsed")


def test_persona_reads_the_winning_set_else_kept_traces_else_bare_choices():
    traces = [trace(0, True), trace(1, False), trace(2, True)]
    assert traces_for_persona(traces, Candidate("bootstrap", 2, BOOTSTRAPPED, [2])) == [traces[2]]
    assert traces_for_persona(traces, Candidate("bootstrap", 1, LABELS_ONLY, [0, 1])) == [traces[0], traces[2]]
    rejected = [trace(0, False), trace(1, False)]
    bare = traces_for_persona(rejected, Candidate("bootstrap", 0, "zero-shot", []))
    assert [t.reasoning for t in bare] == ["", ""] and [t.pair_index for t in bare] == [0, 1]
