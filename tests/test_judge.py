"""synth.judge: the three verdict policies, what counts as verified, and prompts that never lose the instructions or
the persona, however long the rest is (counted with the packaged model's own tokenizer)."""

from __future__ import annotations

import dspy
import pytest

from synth.judge import PairwiseJudge, default_verdict_policy, judgment_of, resolve_verdict_policy
from synth.lm.budget import PromptTooLong, prompt_budget
from synth.lm.prompts import PromptFormat
from synth.signatures import TolerantChatAdapter, official_verdict
from synth.steps import judge_inputs
from tests.scripted import ScriptedEngine, make_pairs, packaged_tokenizer, scripted_lm

PERSONA_MARK = "The user (persona marker 7f3a) prefers short replies."


def judge_once(lm, judge: PairwiseJudge, **inputs):
    pair = make_pairs(1)[0]
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        return judge(**{**judge_inputs(pair, True, 2000), **inputs})


def test_each_policy_reads_verdicts_its_own_way():
    local, _ = scripted_lm()
    remote, _ = scripted_lm(with_scores=False)
    assert default_verdict_policy(local) == "probabilities" and default_verdict_policy(remote) == "parse"
    assert resolve_verdict_policy("official", local) == "official"
    with pytest.raises(ValueError, match="probabilities"):
        resolve_verdict_policy("probabilities", remote)
    with pytest.raises(ValueError, match="verdict_policy"):
        resolve_verdict_policy("majority", local)
    by_probability = judgment_of(judge_once(local, PairwiseJudge()))
    assert (by_probability.source, by_probability.p_first, by_probability.is_verified) == ("probabilities", 0.8, True)
    parsed = judgment_of(judge_once(local, PairwiseJudge(verdict_policy="parse")))
    assert (parsed.preferred, parsed.source, parsed.p_first, parsed.is_verified) == ("First", "parsed", None, True)


def test_retried_and_guessed_verdicts_are_recorded_but_never_verified():
    lm, engine = scripted_lm(with_scores=False, malformed_verdicts=1)
    retried = judgment_of(judge_once(lm, PairwiseJudge()))
    assert (retried.preferred, retried.source, retried.is_verified) == ("First", "retried", False)
    lm, engine = scripted_lm(with_scores=False, malformed_verdicts=3)
    guessed = judgment_of(judge_once(lm, PairwiseJudge()))
    assert (guessed.source, guessed.is_verified, guessed.is_fallback) == ("fallback", False, True)
    assert engine.calls["judge"] == 3  # the first answer and two fresh samples


def test_official_policy_parses_once_and_an_unclear_verdict_is_a_tie():
    lm, engine = scripted_lm(with_scores=False, malformed_verdicts=1)
    tie = judgment_of(judge_once(lm, PairwiseJudge(verdict_policy="official")))
    assert (tie.preferred, tie.source, tie.is_verified) == ("Tie", "tie", False) and engine.calls["judge"] == 1
    assert [official_verdict(v) for v in ("First", "Second.", "First, not Second", "first", None)] == [
        "First", "Second", None, None, None]


# ---- prompts that do not fit ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def packaged_format() -> PromptFormat:
    """The packaged Gemma's tokenizer (no weights) with a deliberately small context."""
    return PromptFormat(packaged_tokenizer(), max_input_tokens=700)


def ranked_demos(n: int) -> list[dspy.Example]:
    return [dspy.Example(conversation=f"User: demo question {i}", first_reply=f"demo {i} " + "long words " * 40,
                         second_reply="no", reasoning=f"demo reasoning {i}", preferred="First") for i in range(n)]


def test_the_persona_survives_a_prompt_longer_than_the_context(packaged_format):
    engine = ScriptedEngine(prompts=packaged_format)
    lm = dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=256, cache=False)
    judge = PairwiseJudge(persona=PERSONA_MARK, demos=ranked_demos(6), reasoning_tokens=64)
    conversation = "User: " + "the beginning " + "filler words " * 900 + "the very end?"
    prediction = judge_once(lm, judge, conversation=conversation)
    messages = engine.requests[-1]
    assert PERSONA_MARK in messages[0]["content"]  # the persona, in the system prompt, is whole
    assert prediction.demos_dropped == 6 and prediction.inputs_cut  # every demo went, then the middle of the pair
    request = messages[-1]["content"]
    assert "the beginning" in request and "the very end?" in request and "tokens cut" in request
    assert request.rstrip().endswith("`[[ ## completed ## ]]`.")  # the request for the answer is whole
    assert packaged_format.count(messages) <= prompt_budget(lm).room(64 + 24)
    assert prediction.verdict_source == "probabilities"


def test_demos_that_do_not_fit_leave_lowest_ranked_first(packaged_format):
    engine = ScriptedEngine(prompts=packaged_format)
    lm = dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=256, cache=False)
    prediction = judge_once(lm, PairwiseJudge(persona=PERSONA_MARK, demos=ranked_demos(6), reasoning_tokens=64))
    shown = "\n".join(m["content"] for m in engine.requests[-1])
    kept = 6 - prediction.demos_dropped
    assert 0 < kept < 6 and not prediction.inputs_cut  # the judged pair is whole once demos make room
    assert all(f"demo question {i}" in shown for i in range(kept))  # the best-ranked stay
    assert not any(f"demo question {i}" in shown for i in range(kept, 6))


def test_instructions_that_alone_exceed_the_context_are_refused_not_cut(packaged_format):
    engine = ScriptedEngine(prompts=packaged_format)
    lm = dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=256, cache=False)
    with pytest.raises(PromptTooLong, match="persona"):
        judge_once(lm, PairwiseJudge(persona=PERSONA_MARK + " And more." * 400, reasoning_tokens=64))
    assert engine.requests == []  # nothing half-cut was sent
