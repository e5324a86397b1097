"""synth.steps: settings, the candidate search (paper + official library), selection rules, scoring a pair in both
orderings, and what feeds the persona."""

from __future__ import annotations

import dataclasses
import random
import threading

import dspy
import pytest

from synth.data import PreferencePair, Turn
from synth.events import Stage
from synth.judge import Judgment, PairwiseJudge
from synth.lm.budget import prompt_budget
from synth.lm.prompts import PromptFormat
from synth.signatures import TolerantChatAdapter
from synth.steps import (
    ALL_VERIFIED,
    BOOTSTRAPPED,
    LABELS_ONLY,
    QUICK,
    ZERO_SHOT,
    Candidate,
    PairScore,
    StepRunner,
    StepSettings,
    Trace,
    judge_both_orders,
    persona_notes,
    select_best,
    shown_first,
    traces_for_persona,
)
from tests.scripted import make_pairs, packaged_tokenizer, scripted_lm


def test_resolve_applies_defaults_then_quick_then_explicit_values():
    assert StepSettings.resolve() == StepSettings()
    assert StepSettings.resolve(num_candidates=None, seed=None) == StepSettings()  # None means "not given"
    quick = StepSettings.resolve(quick=True)
    assert {name: getattr(quick, name) for name in QUICK} == QUICK
    mixed = StepSettings.resolve(quick=True, num_candidates=7, reasoning_tokens=256, num_threads=3)
    assert (mixed.num_candidates, mixed.max_demos, mixed.reasoning_tokens, mixed.persona_tokens,
            mixed.num_threads) == (7, 2, 256, 120, 3)


def test_the_defaults_are_the_papers_search():
    defaults = StepSettings()
    assert defaults.num_candidates == 10 and defaults.max_demos is None  # n = 10 subsets, no cap on their size
    assert defaults.tie_break == "confidence" and defaults.stop_at_score is None and defaults.verdict_policy is None


@pytest.mark.parametrize("values, problem", [
    ({"tie_break": "last"}, "tie_break"), ({"stop_at_score": 80.0}, "0.8"), ({"verdict_policy": "vote"}, "verdict"),
    ({"max_demos": 0}, "max_demos"), ({"reasoning_tokens": 0}, "reasoning_tokens"),
])
def test_settings_refuse_values_that_mean_nothing(values, problem):
    with pytest.raises(ValueError, match=problem):
        StepSettings(**values)


def judgment(preferred: str, p_first: float | None = None, source: str = "parsed") -> Judgment:
    return Judgment(preferred, p_first, "because", source)


def test_pair_score_from_two_judgments():
    right_both = PairScore.of(judgment("First", 0.9), judgment("Second", 0.3))
    assert right_both.score == 1.0 and right_both.p_correct == pytest.approx(0.8)
    biased = PairScore.of(judgment("First"), judgment("First", source="fallback"))  # always says First
    assert biased.score == 0.5 and biased.p_correct == 0.5 and biased.verdict_fallbacks == 1
    assert (biased.correct_chosen_first, biased.correct_chosen_second) == (True, False)
    assert biased.verdict_sources == ("parsed", "fallback")
    wrong = PairScore.of(judgment("Second", 0.4), judgment("First", 0.6))
    assert wrong.score == 0.0 and wrong.p_correct == pytest.approx(0.4)


def test_a_tie_scores_as_wrong_with_half_the_probability():
    tied = PairScore.of(judgment("Tie", source="tie"), judgment("Second"))
    assert tied.score == 0.5 and not tied.correct_chosen_first and tied.p_correct_chosen_first == 0.5
    assert tied.verdict_fallbacks == 1


def test_judge_both_orders_shows_the_chosen_reply_first_then_second():
    lm, engine = scripted_lm()
    pair = make_pairs(1)[0]
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        first, second = judge_both_orders(PairwiseJudge(), pair, 2000)
    assert [order[:2] for order in engine.seen_orders] == [(pair.chosen.content, pair.rejected.content),
                                                           (pair.rejected.content, pair.chosen.content)]
    assert (first.preferred, second.preferred) == ("First", "Second")  # the short reply, wherever it is shown
    assert PairScore.of(first, second).p_correct == pytest.approx(0.8)


def trace(index: int, kept: bool, source: str = "parsed") -> Trace:
    return Trace("bootstrap", index, True, f"reason {index}", "First", "First" if kept else "Second", kept, None,
                 source)


def test_persona_reads_the_winning_set_else_kept_traces_else_bare_choices():
    traces = [trace(0, True), trace(1, False), trace(2, True)]
    assert traces_for_persona(traces, Candidate("bootstrap", 3, BOOTSTRAPPED, [2])) == [traces[2]]
    assert traces_for_persona(traces, Candidate("bootstrap", 2, ALL_VERIFIED, [0, 2])) == [traces[0], traces[2]]
    assert traces_for_persona(traces, Candidate("bootstrap", 1, LABELS_ONLY, [0, 1])) == [traces[0], traces[2]]
    rejected = [trace(0, False), trace(1, False)]
    bare = traces_for_persona(rejected, Candidate("bootstrap", 0, "zero-shot", []))
    assert [t.reasoning for t in bare] == ["", ""] and [t.pair_index for t in bare] == [0, 1]


# ---- the candidate search -----------------------------------------------------------------------------------------
def candidates_for(kept: list[bool], seed: int = 0, **settings) -> list[Candidate]:
    runner = StepRunner(StepSettings(**settings), lambda event: None, threading.Event())
    traces = [trace(i, k) for i, k in enumerate(kept)]
    return runner.make_candidates(Stage.BOOTSTRAP, traces, random.Random(seed))


def test_candidates_are_zero_shot_labels_all_verified_traces_then_random_subsets():
    kept = [True, False, True, True, False, True]
    candidates = candidates_for(kept)
    assert [c.kind for c in candidates[:3]] == [ZERO_SHOT, LABELS_ONLY, ALL_VERIFIED]
    assert candidates[2].trace_ids == [0, 2, 3, 5]  # every verified trace, in training order
    assert len(candidates[1].trace_ids) == 4  # labels only: the official library's 4 labelled examples
    assert [c.candidate_id for c in candidates] == list(range(len(candidates)))
    subsets = [c.trace_ids for c in candidates[3:]]
    assert all(c.kind == BOOTSTRAPPED for c in candidates[3:]) and len(subsets) <= 10
    assert all(set(s) <= {0, 2, 3, 5} for s in subsets)  # a rejected trace is never a demo
    assert len({tuple(s) for s in [*subsets, [0, 2, 3, 5]]}) == len(subsets) + 1  # a repeated set is not re-scored


def test_demo_sets_grow_past_four_when_training_is_larger():
    sizes = [len(c.trace_ids) for c in candidates_for([True] * 20, num_candidates=10)
             if c.kind in (BOOTSTRAPPED, ALL_VERIFIED)]
    assert max(sizes) == 20 and sum(size > 4 for size in sizes) >= 5  # sizes drawn from 1..len(train)
    capped = candidates_for([True] * 20, max_demos=3)
    assert max(len(c.trace_ids) for c in capped) == 3  # a cap, when asked for, holds everywhere


def test_no_verified_trace_leaves_only_zero_shot_and_labels():
    assert [c.kind for c in candidates_for([False, False, False])] == [ZERO_SHOT, LABELS_ONLY]
    assert [c.kind for c in candidates_for([True], max_labeled_demos=0)] == [ZERO_SHOT, ALL_VERIFIED]


def scored(accuracies: list[float], confidences: list[float]) -> list[Candidate]:
    return [Candidate("demos", i, BOOTSTRAPPED, [i], accuracy=a, mean_p_correct=p)
            for i, (a, p) in enumerate(zip(accuracies, confidences, strict=True))]


def test_selection_rules_confidence_first_and_stop_at_score():
    candidates = scored([0.5, 0.75, 0.75, 1.0], [0.6, 0.55, 0.9, 0.7])
    assert select_best(candidates[:3], "confidence", None).candidate_id == 2  # equal accuracy: more confident
    assert select_best(candidates[:3], "first", None).candidate_id == 1  # equal accuracy: the first to reach it
    assert select_best(candidates, "first", None).candidate_id == 3
    assert select_best(candidates, "first", 0.75).candidate_id == 1  # the official stop: search ends at candidate 1
    assert select_best(candidates, "confidence", 0.75).candidate_id == 1
    assert select_best(candidates, "first", 1.0).candidate_id == 3
    assert select_best(list(reversed(candidates[:3])), "first", None).candidate_id == 1  # order of arrival is moot


def test_flip_decides_where_the_chosen_reply_is_shown_and_leaves_the_other_coins_alone():
    pairs = make_pairs(6)
    plain = shown_first(pairs, random.Random(3))
    flipped = [dataclasses.replace(p, flip=i % 2 == 0) if i < 4 else p for i, p in enumerate(pairs)]
    sides = shown_first(flipped, random.Random(3))
    assert sides[:4] == [True, False, True, False] and sides[4:] == plain[4:]


# ---- persona notes ---------------------------------------------------------------------------------------------------
LONG_REPLY = "Opening line of a long reply. " + "Detail after detail. " * 60 + "Closing line."


def multi_turn_pair(index: int) -> PreferencePair:
    return PreferencePair(context=(Turn("user", f"First question {index}"), Turn("assistant", "An earlier answer."),
                                   Turn("user", f"Follow-up question {index}")),
                          chosen=Turn("assistant", LONG_REPLY), rejected=Turn("assistant", f"Short other {index}."))


def test_persona_notes_carry_the_whole_conversation_and_both_replies():
    budget = prompt_budget(scripted_lm()[0])  # a remote-style estimate: plenty of room
    pairs = [multi_turn_pair(i) for i in range(3)]
    notes = persona_notes([trace(0, True), trace(2, True)], pairs, budget, 10_000)
    assert notes.count("Choice ") == 2 and "First question 0" in notes and "An earlier answer." in notes
    assert "Follow-up question 2" in notes and notes.count(LONG_REPLY) == 2  # replies are whole, not 400 characters
    assert "Short other 0." in notes and "Reasoning that predicted this choice: reason 2" in notes


def test_persona_notes_over_budget_are_cut_by_tokens_in_the_middle_of_long_texts():
    budget = PromptFormat(packaged_tokenizer(), max_input_tokens=4096).budget()
    pairs = [multi_turn_pair(i) for i in range(4)]
    traces = [trace(i, True) for i in range(4)]
    notes = persona_notes(traces, pairs, budget, 400)
    assert budget.count_text(notes) <= 400
    assert notes.count("Choice ") == 4 and "tokens cut" in notes  # every choice stays, its long reply is cut
    assert notes.count("Opening line of a long reply.") == 4 and notes.count("Closing line.") == 4
    assert all(f"Follow-up question {i}" in notes and f"Short other {i}." in notes for i in range(4))
    tight = persona_notes(traces, pairs, budget, 120)  # too little even for short cuts: the last choices go
    assert budget.count_text(tight) <= 120 and 0 < tight.count("Choice ") < 4
