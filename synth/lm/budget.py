"""Prompt budgets: how many tokens a prompt takes, and how many the model in use can read.

Every prompt of the method must fit the model's context with room for its answer. The method makes it fit itself
(whole demos dropped, lowest-ranked first; long turns cut in the middle by tokens), so nothing the engine could cut
later, and never the instructions or the persona. This module only measures:

- a local model (an engine with a ``prompts`` :class:`synth.lm.prompts.PromptFormat`): exact counts with the
  model's own tokenizer and chat template; a prompt may take the engine's prompt limit, and prompt and answer
  together the engine's ``context_tokens`` (the model's context within the engine's limit);
- any other model (a remote API): an estimate of one token per :data:`REMOTE_CHARS_PER_TOKEN` characters (English
  runs near four, so the estimate errs long, i.e. safe) plus a few tokens per message, within
  :data:`REMOTE_CONTEXT_TOKENS`, which ``$SYNTH_CONTEXT_TOKENS`` or ``prompt_budget(lm, context_tokens=...)``
  replaces.

:func:`fit_prompt` is the one place a prompt is made to fit; the judge and the persona writer both call it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REMOTE_CONTEXT_TOKENS = 32_768
REMOTE_CHARS_PER_TOKEN = 3
MESSAGE_TOKENS = 8  # role markers and separators around each message, estimated
CONTEXT_ENV = "SYNTH_CONTEXT_TOKENS"
CUT_MARKER = "\n[... {count:,} tokens cut ...]\n"
MIN_PIECE_TOKENS = 16  # a turn is never cut shorter than this; the prompt is refused instead

Messages = Sequence[Mapping[str, str]]


class PromptTooLong(ValueError):
    """The parts of a prompt that are never cut (instructions, persona, the answer's request) do not fit."""


@dataclass(frozen=True)
class PromptBudget:
    """Token counting for one model: ``count`` a prompt, ``cut_middle`` a text, and the context it must fit in.

    ``max_prompt_tokens`` is the longest prompt the model reads; :meth:`room` is what is left for a prompt whose
    answer may take ``answer_tokens``.
    """

    max_prompt_tokens: int
    context_tokens: int
    exact: bool
    _tokenize: Callable[[str], list[int]] | None = None
    _detokenize: Callable[[list[int]], str] | None = None
    _count_messages: Callable[[Messages, str], int] | None = None

    def count(self, prompt: str | Messages, assistant_prefix: str = "") -> int:
        """Tokens of a text, or of chat messages as the model reads them (with an opened assistant turn)."""
        if isinstance(prompt, str):
            return self.count_text(prompt + assistant_prefix)
        if self._count_messages is not None:
            return self._count_messages(prompt, assistant_prefix)
        return (sum(self.count_text(m["content"]) + MESSAGE_TOKENS for m in prompt)
                + self.count_text(assistant_prefix) + MESSAGE_TOKENS)

    def count_text(self, text: str) -> int:
        if self._tokenize is not None:
            return len(self._tokenize(text))
        return math.ceil(len(text) / REMOTE_CHARS_PER_TOKEN)

    def room(self, answer_tokens: int) -> int:
        """The most prompt tokens that leave ``answer_tokens`` for the answer."""
        return min(self.max_prompt_tokens, self.context_tokens - answer_tokens)

    def cut_middle(self, text: str, max_tokens: int) -> str:
        """``text`` with its middle replaced by a marker so it takes about ``max_tokens``; the start and the end of a
        turn say the most about it."""
        if self._tokenize is not None and self._detokenize is not None:
            ids = self._tokenize(text)
            if len(ids) <= max_tokens:
                return text
            keep = max(max_tokens - 12, 2)
            head, tail = ids[: keep * 2 // 3], ids[len(ids) - (keep - keep * 2 // 3):]
            cut = len(ids) - len(head) - len(tail)
            return self._detokenize(head) + CUT_MARKER.format(count=cut) + self._detokenize(tail)
        max_chars = max_tokens * REMOTE_CHARS_PER_TOKEN
        if len(text) <= max_chars:
            return text
        keep = max(max_chars - 12 * REMOTE_CHARS_PER_TOKEN, 2)
        head, tail = text[: keep * 2 // 3], text[len(text) - (keep - keep * 2 // 3):]
        return head + CUT_MARKER.format(count=math.ceil((len(text) - keep) / REMOTE_CHARS_PER_TOKEN)) + tail


def prompt_budget(lm: Any, context_tokens: int | None = None) -> PromptBudget:
    """The budget of ``lm`` (a ``dspy.LM``): exact for an engine that carries its ``prompts``, else the estimate.

    ``context_tokens`` replaces the context (prompt and answer together) the budget would use; for a remote model
    ``$SYNTH_CONTEXT_TOKENS`` does too.
    """
    engine = getattr(lm, "engine", None)
    prompts = getattr(engine, "prompts", None) if engine is not None else None
    if prompts is not None:
        context = context_tokens or getattr(engine, "context_tokens", None) or prompts.max_input_tokens
        return PromptBudget(max_prompt_tokens=min(prompts.max_input_tokens, context), context_tokens=context,
                            exact=True, _tokenize=prompts.token_ids, _detokenize=prompts.decode,
                            _count_messages=prompts.count)
    context = context_tokens or _env_context() or REMOTE_CONTEXT_TOKENS
    return PromptBudget(max_prompt_tokens=context, context_tokens=context, exact=False)


def _env_context() -> int | None:
    text = os.environ.get(CONTEXT_ENV, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"${CONTEXT_ENV} must be a whole number of tokens, got {text!r}") from None
    if value < 256:
        raise ValueError(f"${CONTEXT_ENV} must be at least 256 tokens, got {value}")
    return value


# ---- making a prompt fit ----------------------------------------------------------------------------------------
def cap_pieces(budget: PromptBudget, pieces: Sequence[str], max_total: int) -> list[str]:
    """The pieces with the longest cut in the middle, to one common cap, so that together they take at most
    ``max_total`` tokens; short pieces stay whole. Raises PromptTooLong when even a cap of ``MIN_PIECE_TOKENS`` is
    too much."""
    sizes = [budget.count_text(piece) for piece in pieces]
    if sum(sizes) <= max_total:
        return list(pieces)
    if sum(min(size, MIN_PIECE_TOKENS) for size in sizes) > max_total:
        raise PromptTooLong(f"{len(pieces)} texts cannot share {max_total} tokens")
    low, high = MIN_PIECE_TOKENS, max(sizes)
    while low < high:  # the largest cap whose total fits
        cap = (low + high + 1) // 2
        if sum(min(size, cap) for size in sizes) <= max_total:
            low = cap
        else:
            high = cap - 1
    return [piece if size <= low else budget.cut_middle(piece, low) for piece, size in zip(pieces, sizes, strict=True)]


@dataclass(frozen=True)
class FittedPrompt:
    """What a call sends after fitting: the demos kept (a prefix of the ranked demos) and the inputs (cut or not)."""

    demos: list[Any]
    inputs: dict[str, str]
    demos_dropped: int
    inputs_cut: bool


def fit_prompt(budget: PromptBudget, format_messages: Callable[[Sequence[Any], Mapping[str, str]], Messages],
               demos: Sequence[Any], inputs: Mapping[str, str], answer_tokens: int,
               cuttable: Sequence[str]) -> FittedPrompt:
    """Make one call's prompt fit ``budget`` with ``answer_tokens`` left for the answer.

    First whole demos are dropped, lowest-ranked (last) first; if the prompt still does not fit, the ``cuttable``
    inputs (the conversation being judged, the notes) are cut in the middle by tokens. The instructions, the persona
    and the request for the answer are never touched: if they alone do not fit, PromptTooLong says so.
    """
    limit = budget.room(answer_tokens)
    inputs = dict(inputs)

    def size(kept: int) -> int:
        return budget.count(format_messages(demos[:kept], inputs))

    kept = len(demos)
    if kept and size(kept) > limit:
        low, high = 0, kept - 1  # the most demos that fit (fewer demos are never longer)
        while low < high:
            middle = (low + high + 1) // 2
            if size(middle) <= limit:
                low = middle
            else:
                high = middle - 1
        kept = low
    total = size(kept)
    if total <= limit:
        return FittedPrompt(list(demos[:kept]), inputs, len(demos) - kept, False)
    pieces = [inputs[name] for name in cuttable]
    fixed = total - sum(budget.count_text(piece) for piece in pieces)
    for _ in range(3):  # counts of cut texts are close to, not exactly, the sum of their parts: re-check
        allowed = limit - fixed
        try:
            cut = cap_pieces(budget, pieces, allowed)
        except PromptTooLong:
            raise PromptTooLong(f"the instructions, persona and answer request take about {fixed:,} tokens of the "
                                f"model's {limit:,}; nothing else fits") from None
        inputs.update(zip(cuttable, cut, strict=True))
        total = size(0)
        if total <= limit:
            return FittedPrompt([], inputs, len(demos), True)
        fixed += total - limit
    raise PromptTooLong(f"the prompt still takes {total:,} tokens of the model's {limit:,} after cutting")
