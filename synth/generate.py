"""Draft two contrasting replies to a user's own prompt, so a visitor can label pairs about what they care about.

The two drafts use different instructions and temperatures: one direct and compact, one thorough and warm.
Those poles are what people most often disagree about, so the pair is informative to label.
"""

from __future__ import annotations

import dspy
from dspy.lm15 import Config, Message, Request

DRAFT_STYLES = (
    ("Reply in a direct, compact way: a few sentences, no preamble, only what matters.", 0.3),
    ("Reply thoroughly and warmly: explain the reasoning, add useful details and an example.", 0.9),
)
MAX_PROMPT_CHARS = 2000


def draft_two_responses(lm: dspy.BaseLM, prompt: str, max_tokens: int = 220) -> tuple[str, str]:
    """Two different candidate replies to ``prompt``; raises ValueError if the model cannot produce two."""
    prompt = prompt.strip()
    if not prompt:
        raise ValueError("write a prompt first")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}")
    drafts = []
    for instruction, temperature in DRAFT_STYLES:
        request = Request(model=lm.model, messages=(Message.user(prompt),), system=instruction,
                          config=Config(max_tokens=max_tokens, temperature=temperature, stop=("\nUser:",)))
        drafts.append((lm(request).message.text or "").strip())
    if not all(drafts) or drafts[0] == drafts[1]:
        raise ValueError("the model did not write two different replies; try again or rephrase the prompt")
    return drafts[0], drafts[1]
