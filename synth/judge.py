"""The pairwise judge: chain-of-thought reasoning, then a verdict that is always First or Second."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import dspy

from synth.signatures import VERDICTS, TolerantChatAdapter, judge_signature, normalize_verdict

VERDICT_MARKER = "[[ ## preferred ## ]]"


@dataclass(frozen=True)
class Judgment:
    preferred: str  # "First" | "Second"
    p_first: float | None  # from next-token probabilities when the model exposes them
    reasoning: str
    source: str  # "probabilities" | "parsed" | "retried" | "fallback"

    @property
    def is_fallback(self) -> bool:
        return self.source == "fallback"


class PairwiseJudge(dspy.Module):
    """Predicts which of two replies a person prefers; a persona, if given, sits in the instructions.

    With a local model the reasoning is generated up to the verdict slot and the verdict is read from the
    probabilities of "First" and "Second" at that slot, so it can never be malformed and also gives P(first).
    With a remote model the verdict is parsed; a malformed one is retried with fresh samples, then resolved by a
    recorded fallback (the last First/Second mentioned in the reasoning, else First). Nothing is ever dropped
    or turned into a tie.
    """

    def __init__(self, persona: str | None = None, demos: Sequence[dspy.Example] = (), reasoning_tokens: int = 256,
                 retries: int = 2):
        super().__init__()
        self.persona = persona
        self.reasoning_tokens = reasoning_tokens
        self.retries = retries
        self.reason = dspy.ChainOfThought(judge_signature(persona))
        self.reason.predict.demos = list(demos)

    @property
    def demos(self) -> list[dspy.Example]:
        return list(self.reason.predict.demos)

    def forward(self, conversation: str, first_reply: str, second_reply: str) -> dspy.Prediction:
        inputs = {"conversation": conversation, "first_reply": first_reply, "second_reply": second_reply}
        scorer = getattr(getattr(dspy.settings.lm, "engine", None), "score_choices", None)
        judgment = self._judge_by_probabilities(inputs, scorer) if scorer else self._judge_by_parsing(inputs)
        return dspy.Prediction(reasoning=judgment.reasoning, preferred=judgment.preferred,
                               p_first=judgment.p_first, verdict_source=judgment.source)

    def _judge_by_probabilities(self, inputs: dict[str, str], scorer) -> Judgment:
        config = {"stop": (VERDICT_MARKER,), "max_tokens": self.reasoning_tokens}
        prediction = self.reason(**inputs, config=config)
        reasoning = (prediction.reasoning or "").strip()
        adapter = dspy.settings.adapter or TolerantChatAdapter()
        messages = adapter.format(self.reason.predict.signature, self.reason.predict.demos, inputs)
        prefix = f"[[ ## reasoning ## ]]\n{reasoning}\n\n{VERDICT_MARKER}\n"
        p_first, _ = scorer(messages, prefix, VERDICTS)
        return Judgment(preferred=VERDICTS[0] if p_first >= 0.5 else VERDICTS[1], p_first=float(p_first),
                        reasoning=reasoning, source="probabilities")

    def _judge_by_parsing(self, inputs: dict[str, str]) -> Judgment:
        reasoning = ""
        for attempt in range(self.retries + 1):
            config = {"rollout_id": attempt, "temperature": 1.0} if attempt else {}
            prediction = self.reason(**inputs, config=config)
            reasoning = (prediction.reasoning or "").strip()
            verdict = normalize_verdict(prediction.preferred)
            if verdict:
                return Judgment(verdict, None, reasoning, "parsed" if attempt == 0 else "retried")
        fallback = normalize_verdict(reasoning) or VERDICTS[0]
        return Judgment(fallback, None, reasoning, "fallback")


def judgment_of(prediction: dspy.Prediction) -> Judgment:
    return Judgment(prediction.preferred, prediction.p_first, prediction.reasoning, prediction.verdict_source)


def p_correct(judgment: Judgment, correct: str) -> float:
    """Probability the judge put on the right answer (hard 0/1 when no probabilities are known)."""
    if judgment.p_first is None or math.isnan(judgment.p_first):
        return 1.0 if judgment.preferred == correct else 0.0
    return judgment.p_first if correct == VERDICTS[0] else 1.0 - judgment.p_first
