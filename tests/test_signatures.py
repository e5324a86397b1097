"""synth.signatures: the tolerant parser and verdict normaliser that decide every verdict a remote model gives."""

from __future__ import annotations

import dspy
import pytest

from synth.judge import PairwiseJudge
from synth.signatures import (
    PERSONA_HEADER,
    JudgePreference,
    TolerantChatAdapter,
    WritePersona,
    judge_signature,
    normalize_verdict,
)
from tests.scripted import ScriptedEngine

JUDGE = dspy.ChainOfThought(JudgePreference).predict.signature  # outputs: reasoning, preferred


def parse(completion: str, signature=JUDGE) -> dict:
    return TolerantChatAdapter().parse(signature, completion)


@pytest.mark.parametrize("completion, expected", [
    # well formed, as DSPy's chat format asks
    ("[[ ## reasoning ## ]]\nShort wins.\n\n[[ ## preferred ## ]]\nSecond\n\n[[ ## completed ## ]]",
     {"reasoning": "Short wins.", "preferred": "Second"}),
    # headers with the value on the same line, no blank lines, no completion marker
    ("[[ ## reasoning ## ]] Short wins.\n[[ ## preferred ## ]] First",
     {"reasoning": "Short wins.", "preferred": "First"}),
    # chatter before the first header is dropped when the headers are there
    ("Sure! Here is my answer.\n[[ ## reasoning ## ]]\nok\n[[ ## preferred ## ]]\nFirst",
     {"reasoning": "ok", "preferred": "First"}),
    # a field the signature does not have is ignored, the known ones are still read
    ("[[ ## reasoning ## ]]\nok\n[[ ## confidence ## ]]\nhigh\n[[ ## preferred ## ]]\nSecond",
     {"reasoning": "ok", "preferred": "Second"}),
    # the verdict header is missing: the reasoning is kept, the verdict is left for the judge to resolve
    ("[[ ## reasoning ## ]]\nI would go with Second.", {"reasoning": "I would go with Second.", "preferred": None}),
    # no header at all: the text goes to the first output field
    ("I think the first reply is better.", {"reasoning": "I think the first reply is better.", "preferred": None}),
    # garbled markers are not headers: the whole text is the first field
    ("[[ reasoning ]]\nok\n[[ preferred ]]\nSecond", {"reasoning": "[[ reasoning ]]\nok\n[[ preferred ]]\nSecond",
                                                     "preferred": None}),
    # empty sections stay None rather than becoming empty strings
    ("[[ ## reasoning ## ]]\n\n[[ ## preferred ## ]]\n", {"reasoning": None, "preferred": None}),
])
def test_parse_takes_what_is_under_each_header(completion, expected):
    assert parse(completion) == expected


@pytest.mark.parametrize("written, parsed", [
    ("Second", "Second"),  # coerced into the Literal
    ('"Second"', "Second"),  # JSON-quoted value, coerced too
    (" Second ", "Second"),
    ("first", "first"),  # Literal coercion fails: the raw text is kept for normalize_verdict
    ("the second reply", "the second reply"),
    ("**First**", "**First**"),
    ("First\n\nBecause it is short.", "First\n\nBecause it is short."),
])
def test_a_verdict_that_cannot_be_coerced_keeps_its_raw_text(written, parsed):
    assert parse(f"[[ ## preferred ## ]]\n{written}")["preferred"] == parsed


def test_parse_never_raises_on_other_signatures():
    assert parse("The user likes short replies.\nThe user dislikes jokes.", WritePersona) == {
        "persona": "The user likes short replies.\nThe user dislikes jokes."}
    assert parse("", WritePersona) == {"persona": None}
    assert parse("[[ ## persona ## ]]\nThe user is brief.\n\n[[ ## completed ## ]]", WritePersona) == {
        "persona": "The user is brief."}


@pytest.mark.parametrize("value, verdict", [
    ("First", "First"),
    ("Second", "Second"),
    ("SECOND", "Second"),
    ("First.", "First"),
    ("first.", "First"),
    ("Second reply", "Second"),
    ("**First**", "First"),
    ("Answer: First", "First"),
    ("the second reply", "Second"),
    ("I prefer the first one.", "First"),
    ("First\n\nBecause it is short.", "First"),  # starts with a verdict: that is the answer
    ("Both the first and the second are fine, but the second is better", "Second"),  # the last one mentioned
    ("The first reply rambles; I pick the second.", "Second"),
])
def test_normalize_verdict_reads_first_or_second(value, verdict):
    assert normalize_verdict(value) == verdict


@pytest.mark.parametrize("value", [None, "", "   ", "Neither", "I cannot decide.", "I prefer reply 2", "the 1st"])
def test_normalize_verdict_refuses_text_that_commits_to_neither(value):
    assert normalize_verdict(value) is None


def test_persona_goes_into_the_judges_instructions():
    assert judge_signature(None) is JudgePreference and judge_signature("") is JudgePreference
    personal = judge_signature("  The user likes brevity.  ")
    assert personal.instructions.startswith(JudgePreference.instructions)
    assert personal.instructions.endswith(f"{PERSONA_HEADER}\nThe user likes brevity.")
    assert list(personal.output_fields) == list(JudgePreference.output_fields)


class SilentEngine(ScriptedEngine):
    """A model that ends its turn at once: every completion is empty."""

    def answer(self, messages, stop=()) -> str:
        return ""


def test_an_empty_completion_is_missing_fields_and_the_judge_still_scores_it():
    engine = SilentEngine()
    lm = dspy.LM("local/silent", engine=engine, temperature=0.0, max_tokens=64, cache=False)
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        prediction = dspy.Predict(JudgePreference)(conversation="user: hi", first_reply="a", second_reply="b")
        assert prediction.preferred is None
        verdict = PairwiseJudge(verdict_policy="probabilities")(conversation="user: hi", first_reply="Short.",
                                                                second_reply="A much longer reply.")
    assert verdict.reasoning == "" and verdict.verdict_source == "probabilities" and verdict.p_first is not None
