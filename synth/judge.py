"""The pairwise judge: chain-of-thought reasoning, then a verdict, read the way ``verdict_policy`` says.

Three policies, one switch (``SynthesizeMe(verdict_policy=...)``, ``--verdict-policy``), so the effect of each can be
measured:

- ``probabilities`` (default for local models): the reasoning is generated up to the verdict slot and the verdict
  is read from the probabilities of "First" and "Second" there; it cannot be malformed and gives P(first).
- ``parse`` (default for remote models): the verdict is parsed; a malformed one is re-sampled up to ``retries``
  times, then resolved by a recorded fallback (the last First/Second the reasoning names, else First).
- ``official``: the official library's rule, parsed once; a verdict that names neither or both replies is a tie,
  which scores as wrong.

Only a verdict the model gave itself, at once, counts as *verified* (``Judgment.is_verified``: probabilities or a
first clean parse): re-sampled and guessed verdicts are recorded but never make a trace a demo or feed the persona.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import dspy

from synth.lm.budget import fit_prompt, prompt_budget
from synth.signatures import VERDICTS, TolerantChatAdapter, judge_signature, normalize_verdict, official_verdict

VERDICT_MARKER = "[[ ## preferred ## ]]"
VERDICT_POLICIES = ("probabilities", "parse", "official")
TIE = "Tie"
# Verdict sources: what the model gave itself, and what was re-sampled, guessed or left undecided.
VERIFIED_SOURCES = frozenset({"probabilities", "parsed"})
FALLBACK_SOURCES = frozenset({"fallback", "tie"})
VERDICT_TOKENS = 24  # the verdict slot after the reasoning: marker, answer and the closing marker
JUDGED_FIELDS = ("conversation", "first_reply", "second_reply")


@dataclass(frozen=True)
class Judgment:
    preferred: str  # "First" | "Second" | "Tie" (official policy, unparseable)
    p_first: float | None  # from next-token probabilities when the model exposes them
    reasoning: str
    source: str  # "probabilities" | "parsed" | "retried" | "fallback" | "tie"

    @property
    def is_verified(self) -> bool:
        """The model gave this verdict itself, at once: only such verdicts verify a trace."""
        return self.source in VERIFIED_SOURCES

    @property
    def is_fallback(self) -> bool:
        """The model gave no usable verdict: it was guessed (parse) or left a tie (official)."""
        return self.source in FALLBACK_SOURCES


def default_verdict_policy(lm: dspy.BaseLM) -> str:
    """``probabilities`` when the LM's engine can score choices (local models), else ``parse``."""
    return "probabilities" if _scorer(lm) is not None else "parse"


def resolve_verdict_policy(policy: str | None, lm: dspy.BaseLM) -> str:
    """The policy to use with ``lm``: the given one (checked), or the LM's default."""
    if policy is None:
        return default_verdict_policy(lm)
    if policy not in VERDICT_POLICIES:
        raise ValueError(f"verdict_policy must be one of {', '.join(VERDICT_POLICIES)}, got {policy!r}")
    if policy == "probabilities" and _scorer(lm) is None:
        raise ValueError(f"verdict_policy 'probabilities' needs a local model that exposes next-token probabilities; "
                         f"{getattr(lm, 'model', lm)} does not (use 'parse' or 'official')")
    return policy


def _scorer(lm: dspy.BaseLM | None):
    return getattr(getattr(lm, "engine", None), "score_choices", None)


class PairwiseJudge(dspy.Module):
    """Predicts which of two replies a person prefers; a persona, if given, sits in the instructions.

    ``demos`` are ranked (best first): when a prompt would not fit the model's context, the lowest-ranked demos are
    left out of that call, then the conversation being judged is cut in the middle (``synth.lm.budget.fit_prompt``);
    the instructions and the persona never are. ``verdict_policy`` None means the LM's default.
    """

    def __init__(self, persona: str | None = None, demos: Sequence[dspy.Example] = (), reasoning_tokens: int = 256,
                 verdict_policy: str | None = None, retries: int = 2):
        super().__init__()
        self.persona = persona
        self.reasoning_tokens = reasoning_tokens
        self.verdict_policy = verdict_policy
        self.retries = retries
        self.reason = dspy.ChainOfThought(judge_signature(persona))
        self.reason.predict.demos = list(demos)

    @property
    def demos(self) -> list[dspy.Example]:
        return list(self.reason.predict.demos)

    def forward(self, conversation: str, first_reply: str, second_reply: str) -> dspy.Prediction:
        lm = dspy.settings.lm
        policy = resolve_verdict_policy(self.verdict_policy, lm)
        adapter = dspy.settings.adapter or TolerantChatAdapter()
        signature = self.reason.predict.signature
        fitted = fit_prompt(prompt_budget(lm), lambda demos, inputs: adapter.format(signature, demos, inputs),
                            self.demos, {"conversation": conversation, "first_reply": first_reply,
                                         "second_reply": second_reply},
                            answer_tokens=self._answer_tokens(policy, lm), cuttable=JUDGED_FIELDS)
        if policy == "probabilities":
            judgment = self._judge_by_probabilities(fitted.inputs, fitted.demos, adapter, _scorer(lm))
        else:
            judgment = self._judge_by_parsing(fitted.inputs, fitted.demos, policy)
        return dspy.Prediction(reasoning=judgment.reasoning, preferred=judgment.preferred,
                               p_first=judgment.p_first, verdict_source=judgment.source,
                               demos_dropped=fitted.demos_dropped, inputs_cut=fitted.inputs_cut)

    def _answer_tokens(self, policy: str, lm: dspy.BaseLM) -> int:
        """What a call may write: the reasoning and the verdict slot; a parsed answer may run to the LM's own
        ``max_tokens`` (a verdict cut off by a short limit would only be re-sampled)."""
        if policy == "probabilities":
            return self.reasoning_tokens + VERDICT_TOKENS
        return max(self.reasoning_tokens + VERDICT_TOKENS, int(getattr(lm, "kwargs", {}).get("max_tokens") or 0))

    def _judge_by_probabilities(self, inputs: dict[str, str], demos: list, adapter, scorer) -> Judgment:
        config = {"stop": (VERDICT_MARKER,), "max_tokens": self.reasoning_tokens}
        prediction = self.reason(**inputs, demos=demos, config=config)
        reasoning = (prediction.reasoning or "").strip()
        messages = adapter.format(self.reason.predict.signature, demos, inputs)
        prefix = f"[[ ## reasoning ## ]]\n{reasoning}\n\n{VERDICT_MARKER}\n"
        p_first, _ = scorer(messages, prefix, VERDICTS)
        return Judgment(preferred=VERDICTS[0] if p_first >= 0.5 else VERDICTS[1], p_first=float(p_first),
                        reasoning=reasoning, source="probabilities")

    def _judge_by_parsing(self, inputs: dict[str, str], demos: list, policy: str) -> Judgment:
        if policy == "official":
            prediction = self.reason(**inputs, demos=demos)
            reasoning = (prediction.reasoning or "").strip()
            verdict = official_verdict(prediction.preferred)
            return Judgment(verdict or TIE, None, reasoning, "parsed" if verdict else "tie")
        reasoning = ""
        for attempt in range(self.retries + 1):
            config = {"rollout_id": attempt, "temperature": 1.0} if attempt else {}
            prediction = self.reason(**inputs, demos=demos, config=config)
            reasoning = (prediction.reasoning or "").strip()
            verdict = normalize_verdict(prediction.preferred)
            if verdict:
                return Judgment(verdict, None, reasoning, "parsed" if attempt == 0 else "retried")
        fallback = normalize_verdict(reasoning) or VERDICTS[0]
        return Judgment(fallback, None, reasoning, "fallback")


def judgment_of(prediction: dspy.Prediction) -> Judgment:
    return Judgment(prediction.preferred, prediction.p_first, prediction.reasoning, prediction.verdict_source)


def p_correct(judgment: Judgment, correct: str) -> float:
    """Probability the judge put on the right answer: from P(first) when known, else 1 or 0, and ½ for a tie."""
    if judgment.preferred == TIE:
        return 0.5
    if judgment.p_first is None or math.isnan(judgment.p_first):
        return 1.0 if judgment.preferred == correct else 0.0
    return judgment.p_first if correct == VERDICTS[0] else 1.0 - judgment.p_first
