"""From DSPy messages to the token ids a local model reads: its chat template, or a plain transcript for base models.

A prompt longer than the engine reads is never cut at its start (the system prompt holds the instructions and the
persona) nor at its end (the request for the answer and the opened answer). The method fits its prompts before they
get here (``synth.lm.budget.fit_prompt``); what still arrives too long has the middle of its last user turn, the
conversation being judged, cut by tokens, and a prompt whose fixed parts alone are too long is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from synth.lm.budget import MIN_PIECE_TOKENS, PromptBudget, PromptTooLong, cap_pieces

PLAIN_ROLE_NAMES = {"system": "", "user": "User", "assistant": "Assistant", "developer": "Instructions"}
# DSPy's chat adapter ends its request with "starting with the field `[[ ## name ## ]]`"; a base model follows the
# format far better when its turn already opens with that header.
FIRST_FIELD_REQUEST = re.compile(r"starting with the field `(\[\[ ## \w+ ## \]\])`")
# Chat templates that print today's date (Llama 3's) get this one instead: a prompt must not change with the day,
# or the same fit would give another persona tomorrow. It is the date Llama 3's template falls back to.
TEMPLATE_DATE = "26 Jul 2024"
FIELD_HEADER_LINE = re.compile(r"(\[\[ ## \w+ ## \]\]\n)")
ANSWER_REQUEST = re.compile(r"\n\nRespond with .*\Z", re.S)  # DSPy's closing request for the output fields
REQUESTED_FIELD = re.compile(r"`(\[\[ ## \w+ ## \]\])`")


@dataclass(frozen=True)
class PromptFormat:
    """How one tokenizer's model is prompted; ``max_input_tokens`` bounds what :meth:`encode` returns."""

    tokenizer: object
    max_input_tokens: int

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: Sequence[dict[str, str]], assistant_prefix: str = "", fit: bool = True) -> str:
        """Chat template when the tokenizer has one; otherwise a plain transcript a base model can continue.

        In the plain transcript, a request that names the first answer field gets that field's header as the
        start of the assistant turn (unless the caller gives its own prefix); parsing treats header-less text as
        that first field. With ``fit`` a prompt over ``max_input_tokens`` has the middle of its last user turn cut
        (see the module docstring).
        """
        text = self._render(messages, assistant_prefix)
        if not fit or len(text.encode("utf-8")) + 4 <= self.max_input_tokens:  # a token spans at least one byte
            return text
        over = len(self.encode_unchecked(text)) - self.max_input_tokens
        target = over
        for _ in range(3):  # a cut text's count is close to, not exactly, its parts': cut a little more if needed
            if over <= 0:
                return text
            text = self._render(self._shorten_last_user_turn(messages, target), assistant_prefix)
            over = len(self.encode_unchecked(text)) - self.max_input_tokens
            target += max(over, 0)
        if over > 0:
            raise PromptTooLong(f"a prompt still {over:,} tokens over the model's {self.max_input_tokens:,} after "
                                "cutting its last turn")
        return text

    def _render(self, messages: Sequence[dict[str, str]], assistant_prefix: str) -> str:
        if self.has_chat_template:
            try:
                text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True,
                                                          date_string=TEMPLATE_DATE)
            except Exception:  # some templates refuse a system role: fold it into the first user turn
                text = self.tokenizer.apply_chat_template(_fold_system(messages), tokenize=False,
                                                          add_generation_prompt=True, date_string=TEMPLATE_DATE)
            return text + assistant_prefix
        blocks = []
        for index, message in enumerate(messages):
            name = PLAIN_ROLE_NAMES.get(message["role"], message["role"].title())
            content = short_request(message["content"]) if index == len(messages) - 1 else message["content"]
            blocks.append(f"{name}: {content}" if name else content)
        if not assistant_prefix and messages:
            requested = FIRST_FIELD_REQUEST.search(messages[-1]["content"])
            assistant_prefix = f"{requested.group(1)}\n" if requested else ""
        blocks.append(f"Assistant: {assistant_prefix}" if assistant_prefix else "Assistant:")
        return "\n\n".join(blocks)

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt. A prompt over ``max_input_tokens`` is refused, never cut: :meth:`render`
        fits what it renders, and any cut here could only take the instructions or the answer slot."""
        ids = self.encode_unchecked(text)
        if len(ids) > self.max_input_tokens:
            raise PromptTooLong(f"a prompt of {len(ids):,} tokens; the model reads at most {self.max_input_tokens:,}")
        return ids

    def encode_unchecked(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"]

    def token_ids(self, text: str) -> list[int]:
        """Token ids of a piece of text inside a prompt (no special tokens)."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def count(self, messages: Sequence[dict[str, str]], assistant_prefix: str = "") -> int:
        """Tokens of the messages as the model would read them, before any fitting."""
        return len(self.encode_unchecked(self._render(messages, assistant_prefix)))

    def budget(self) -> PromptBudget:
        """This format's exact budget (:mod:`synth.lm.budget`), with the whole input limit as the context."""
        return PromptBudget(max_prompt_tokens=self.max_input_tokens, context_tokens=self.max_input_tokens, exact=True,
                            _tokenize=self.token_ids, _detokenize=self.decode, _count_messages=self.count)

    def _shorten_last_user_turn(self, messages: Sequence[dict[str, str]], excess: int) -> list[dict[str, str]]:
        """The messages with ``excess`` tokens (and a little more) cut from the middle of the last user turn's
        fields; the system messages and the turn's request for the answer stay whole."""
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise PromptTooLong("an over-long prompt with no user turn to shorten")
        index = users[-1]
        content = messages[index]["content"]
        request = ANSWER_REQUEST.search(content)
        body, tail = (content[: request.start()], content[request.start():]) if request else (content, "")
        parts = FIELD_HEADER_LINE.split(body)  # text, header, text, header, text ...
        pieces = parts[0::2]
        budget = self.budget()
        allowed = sum(budget.count_text(piece) for piece in pieces) - excess - MIN_PIECE_TOKENS
        try:
            cut = cap_pieces(budget, pieces, allowed)
        except PromptTooLong:
            raise PromptTooLong(f"a prompt {excess:,} tokens over the model's {self.max_input_tokens:,} whose "
                                "instructions alone do not fit") from None
        parts[0::2] = cut
        shortened = [dict(m) for m in messages]
        shortened[index]["content"] = "".join(parts) + tail
        return shortened


def short_request(content: str) -> str:
    """``content`` with DSPy's closing request for the answer fields cut to the fields in their order: the request
    comes after the pair judged, so every judge call computes it afresh. Only plain transcripts get it: there the
    assistant turn already opens the first field, and the system prompt lays out every field and the verdict's allowed
    values; chat models read DSPy's own words."""
    request = ANSWER_REQUEST.search(content)
    fields = REQUESTED_FIELD.findall(request.group(0)) if request else []
    if not fields:
        return content
    return content[: request.start()] + "\n\nRespond with " + ", then ".join(f"`{field}`" for field in fields) + "."


def _fold_system(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system and rest:
        rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def request_messages(request) -> list[dict[str, str]]:
    """A DSPy lm15 Request as role/content dicts, the shape chat templates take."""
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    for message in request.messages:
        role = "user" if message.role == "developer" else message.role
        messages.append({"role": role, "content": message.text or ""})
    return messages
