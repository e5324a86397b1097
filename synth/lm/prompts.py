"""From DSPy messages to the token ids a local model reads: its chat template, or a plain transcript for base models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

PLAIN_ROLE_NAMES = {"system": "", "user": "User", "assistant": "Assistant", "developer": "Instructions"}
# DSPy's chat adapter ends its request with "starting with the field `[[ ## name ## ]]`"; a base model follows the
# format far better when its turn already opens with that header.
FIRST_FIELD_REQUEST = re.compile(r"starting with the field `(\[\[ ## \w+ ## \]\])`")


@dataclass(frozen=True)
class PromptFormat:
    """How one tokenizer's model is prompted; ``max_input_tokens`` bounds what :meth:`encode` returns."""

    tokenizer: object
    max_input_tokens: int

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def render(self, messages: Sequence[dict[str, str]], assistant_prefix: str = "") -> str:
        """Chat template when the tokenizer has one; otherwise a plain transcript a base model can continue.

        In the plain transcript, a request that names the first answer field gets that field's header as the
        start of the assistant turn (unless the caller gives its own prefix); parsing treats header-less text as
        that first field.
        """
        if self.has_chat_template:
            try:
                text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            except Exception:  # some templates refuse a system role: fold it into the first user turn
                text = self.tokenizer.apply_chat_template(_fold_system(messages), tokenize=False,
                                                          add_generation_prompt=True)
            return text + assistant_prefix
        blocks = []
        for message in messages:
            name = PLAIN_ROLE_NAMES.get(message["role"], message["role"].title())
            blocks.append(f"{name}: {message['content']}" if name else message["content"])
        if not assistant_prefix and messages:
            requested = FIRST_FIELD_REQUEST.search(messages[-1]["content"])
            assistant_prefix = f"{requested.group(1)}\n" if requested else ""
        blocks.append(f"Assistant: {assistant_prefix}" if assistant_prefix else "Assistant:")
        return "\n\n".join(blocks)

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered prompt; a prompt over ``max_input_tokens`` keeps its first token and its end,
        which holds the pair being judged and the answer slot."""
        ids = self.tokenizer(text, add_special_tokens=not self.has_chat_template)["input_ids"]
        if len(ids) > self.max_input_tokens:
            ids = ids[:1] + ids[len(ids) - self.max_input_tokens + 1:]
        return ids


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
