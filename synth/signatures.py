"""The DSPy signatures of SynthesizeMe, with instructions written for this project, and a forgiving adapter."""

from __future__ import annotations

import re
from typing import Any, Literal

import dspy
from dspy.adapters.chat_adapter import ChatAdapter
from dspy.adapters.utils import parse_value

VERDICTS: tuple[str, str] = ("First", "Second")
FIELD_HEADER = re.compile(r"\[\[ ## (\w+) ## \]\]")


class JudgePreference(dspy.Signature):
    """You stand in for one particular person and predict which of two replies they would choose.
    Read the conversation and both replies. Think about what this person seems to value (length, tone,
    structure, depth, caution, evidence, humour...) and how each reply serves it, then name the reply they
    would pick: First or Second."""

    conversation: str = dspy.InputField(desc="the conversation so far; both replies answer its last user message")
    first_reply: str = dspy.InputField(desc="reply shown first")
    second_reply: str = dspy.InputField(desc="reply shown second")
    preferred: Literal["First", "Second"] = dspy.OutputField(desc="the reply this person prefers")


PERSONA_HEADER = "What we know about this person:"


def judge_signature(persona: str | None) -> type[dspy.Signature]:
    """The judge's signature, with the persona placed in its instructions when there is one."""
    if not persona:
        return JudgePreference
    return JudgePreference.with_instructions(f"{JudgePreference.instructions}\n\n{PERSONA_HEADER}\n{persona.strip()}")


class WritePersona(dspy.Signature):
    """You will read notes on one person's choices between two AI replies. Each note gives the conversation, the
    reply the person chose, the reply they passed over and, where there is one, reasoning that correctly predicted
    the choice. First think about what the choices have in common: which differences decided them (length, tone,
    structure, depth, caution, evidence, humour, expertise) and what background could explain them. Then write a
    persona of this person as a reader of AI replies: plain sentences about "the user", one trait per sentence, that
    would help someone predict their next choice. Generalise beyond single topics and claim only what the notes
    support."""

    preference_notes: str = dspy.InputField(desc="the person's choices, one block per choice")
    persona: str = dspy.OutputField(desc="3 to 6 sentences, each starting with 'The user'")


class TolerantChatAdapter(ChatAdapter):
    """DSPy's chat format, but parsing never raises.

    Small and base models often drop or garble the ``[[ ## field ## ]]`` markers. Instead of failing the call (and
    silently losing a trace or a candidate), each output field takes what was written under its header, text with
    no header at all goes to the first output field, and a field whose value cannot be coerced keeps the raw text
    so the caller can decide (the judge resolves verdicts itself).
    """

    def __init__(self, **kwargs: Any):
        super().__init__(use_json_adapter_fallback=False, **kwargs)

    def _call_postprocess(self, processed_signature: type[dspy.Signature], original_signature: type[dspy.Signature],
                          outputs: list[dict[str, Any] | str], lm: dspy.BaseLM,
                          lm_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """An empty completion (a model that ended its turn at once) has every field missing; DSPy would raise."""
        outputs = [_never_empty(output) for output in outputs]
        return super()._call_postprocess(processed_signature, original_signature, outputs, lm, lm_kwargs)

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        sections: dict[str | None, list[str]] = {None: []}
        order: list[str | None] = [None]
        current: str | None = None
        for line in completion.splitlines():
            match = FIELD_HEADER.match(line.strip())
            if match:
                current = match.group(1)
                if current not in sections:
                    sections[current] = []
                    order.append(current)
                rest = line.strip()[match.end():].strip()
                if rest:
                    sections[current].append(rest)
            else:
                sections[current].append(line)
        texts = {k: "\n".join(v).strip() for k, v in sections.items()}
        outputs = list(signature.output_fields)
        fields: dict[str, Any] = dict.fromkeys(outputs)
        if texts.get(None) and not any(texts.get(name) for name in outputs):
            texts[outputs[0]] = texts[None]
        for name in outputs:
            raw = texts.get(name)
            if not raw:
                continue
            try:
                fields[name] = parse_value(raw, signature.output_fields[name].annotation)
            except (ValueError, TypeError):
                fields[name] = raw
        return fields


def _never_empty(output: dict[str, Any] | str) -> dict[str, Any] | str:
    if isinstance(output, dict):
        return output if output.get("text") or output.get("tool_calls") else {**output, "text": "\n"}
    return output or "\n"


def normalize_verdict(value: Any) -> str | None:
    """'First'/'Second' from a parsed field or free text; None when the text commits to neither."""
    if value is None:
        return None
    text = str(value).strip().lower()
    for verdict in VERDICTS:
        if text == verdict.lower() or text.startswith(verdict.lower()):
            return verdict
    mentions = [(m.start(), m.group(0)) for m in re.finditer(r"\b(first|second)\b", text)]
    if mentions:
        return mentions[-1][1].title()  # the conclusion is usually stated last
    return None


def official_verdict(value: Any) -> str | None:
    """The official library's reading of a verdict: it names "First" and not "Second" (or the reverse), exactly as
    written; anything else is no verdict."""
    text = "" if value is None else str(value)
    first, second = VERDICTS[0] in text, VERDICTS[1] in text
    if first == second:
        return None
    return VERDICTS[0] if first else VERDICTS[1]
