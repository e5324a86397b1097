"""Replies written for a visitor: two contrasting drafts to label, and one prompt answered with and without a persona.

``draft_two_responses`` uses two instructions and temperatures, one direct and compact, one thorough and warm: those
poles are what people most often disagree about, so the pair is informative to label.

``answer_with_and_without`` shows what a persona changes: the same model answers the same prompt once with no system
prompt and once with the persona's generation prompt (``SynthesizeMe.get_generation_prompt``), both greedy, so the
persona is the only difference. The two stream side by side in an order drawn from ``seed``, so a view can show them
unlabelled; :meth:`TwoAnswers.preferred_pair` turns the visitor's choice into a labelled pair for the next fit.
"""

from __future__ import annotations

import contextlib
import contextvars
import queue
import random
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import dspy
from dspy.lm15 import Config, Message, Request

from synth.data import PreferencePair, Turn
from synth.lm import stream_chat
from synth.lm.budget import prompt_budget
from synth.parallel import FitCancelled
from synth.pipeline import SynthesizeMe

DRAFT_STYLES = (
    ("Reply in a direct, compact way: a few sentences, no preamble, only what matters.", 0.3),
    ("Reply thoroughly and warmly: explain the reasoning, add useful details and an example.", 0.9),
)
MAX_PROMPT_CHARS = 2000
MAX_ANSWER_TOKENS = 512
MIN_ANSWER_TOKENS = 16  # when the prompts leave less room than this for an answer, they are refused
# A model without a chat template answers in a plain transcript and would go on to write the user's next turn.
STOP_MARKERS = ("\nUser:",)
PAIR_SOURCE = "with-without-persona"


def checked_prompt(prompt: str) -> str:
    """The visitor's prompt, stripped; ValueError when it is empty or too long to send."""
    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError("write a prompt first")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt is {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}")
    return prompt


def draft_two_responses(lm: dspy.BaseLM, prompt: str, max_tokens: int = 220) -> tuple[str, str]:
    """Two different candidate replies to ``prompt``; raises ValueError if the model cannot produce two."""
    prompt = checked_prompt(prompt)
    drafts = []
    for instruction, temperature in DRAFT_STYLES:
        request = Request(model=lm.model, messages=(Message.user(prompt),), system=instruction,
                          config=Config(max_tokens=max_tokens, temperature=temperature, stop=STOP_MARKERS))
        drafts.append((lm(request).message.text or "").strip())
    if not all(drafts) or drafts[0] == drafts[1]:
        raise ValueError("the model did not write two different replies; try again or rephrase the prompt")
    return drafts[0], drafts[1]


@dataclass(frozen=True)
class TwoAnswers:
    """Both answers to one prompt as far as they have streamed, in the order they are shown.

    ``persona_first`` says which is which; a view keeps it hidden until the visitor has chosen. ``done`` is True on
    the last update, when both answers are complete.
    """

    prompt: str
    first: str
    second: str
    persona_first: bool
    done: bool = False

    @property
    def with_persona(self) -> str:
        return self.first if self.persona_first else self.second

    @property
    def without_persona(self) -> str:
        return self.second if self.persona_first else self.first

    def preferred_pair(self, first_preferred: bool, user_id: str | None = None) -> PreferencePair:
        """The visitor's choice as a labelled pair: the answer they preferred is ``chosen``.

        ``extra`` records which answer had the persona and where the chosen one was shown, so a later analysis can
        count how often people prefer their persona's answer."""
        if not self.done:
            raise ValueError("the answers are still being written; choose when both are complete")
        chosen, rejected = (self.first, self.second) if first_preferred else (self.second, self.first)
        if not chosen.strip() or not rejected.strip():
            raise ValueError("one of the answers is empty; a pair needs two replies")
        if chosen.strip() == rejected.strip():
            raise ValueError("the two answers are identical; choosing between them says nothing")
        return PreferencePair(context=(Turn("user", self.prompt),), chosen=Turn("assistant", chosen),
                              rejected=Turn("assistant", rejected), user_id=user_id,
                              extra={"source": PAIR_SOURCE,
                                     "chosen_with_persona": first_preferred == self.persona_first,
                                     "shown_first": "chosen" if first_preferred else "rejected"})


def generation_prompt(persona_source: SynthesizeMe | Mapping[str, Any]) -> str:
    """The generation prompt of a fitted model or of a saved artifact's contents."""
    if isinstance(persona_source, SynthesizeMe):
        return persona_source.get_generation_prompt()
    return SynthesizeMe.from_artifact(dict(persona_source)).get_generation_prompt()


def answer_with_and_without(lm: dspy.BaseLM, artifact_or_model: SynthesizeMe | Mapping[str, Any], prompt: str,
                            max_tokens: int = 256, cancel: threading.Event | None = None, seed: int = 0
                            ) -> Iterator[TwoAnswers]:
    """Stream the answers to ``prompt`` with no system prompt and with the persona's generation prompt.

    Yields a :class:`TwoAnswers` each time either answer grows; the last one has ``done=True``. The prompt is
    refused past ``MAX_PROMPT_CHARS``; ``max_tokens`` is clamped to 1..``MAX_ANSWER_TOKENS`` and to what the model's
    context leaves after the longer prompt (the persona's), which is refused when that is under
    ``MIN_ANSWER_TOKENS``. Setting ``cancel`` stops both answers and raises ``FitCancelled``; closing the iterator
    early stops them too (and sets ``cancel``).
    """
    prompt = checked_prompt(prompt)
    persona_messages = [{"role": "system", "content": generation_prompt(artifact_or_model)},
                        {"role": "user", "content": prompt}]
    plain_messages = [{"role": "user", "content": prompt}]
    budget = prompt_budget(lm)
    used = budget.count(persona_messages)
    room = budget.context_tokens - used  # the answer shares the context with its prompt
    if used > budget.max_prompt_tokens or room < MIN_ANSWER_TOKENS:
        raise ValueError(f"the persona's generation prompt and your prompt take {used:,} of the model's "
                         f"{budget.context_tokens:,} tokens, leaving no room for an answer; shorten the prompt")
    max_tokens = min(max(1, int(max_tokens)), MAX_ANSWER_TOKENS, room)
    persona_first = random.Random(f"{seed}:{prompt}").random() < 0.5
    shown = (persona_messages, plain_messages) if persona_first else (plain_messages, persona_messages)
    cancel = cancel or threading.Event()
    updates: queue.Queue = queue.Queue()
    finished = object()

    def produce(slot: int, messages: list[dict[str, str]]) -> None:
        text = ""
        try:
            with contextlib.closing(stream_chat(lm, messages, max_tokens, cancel=cancel, temperature=0.0,
                                                stop=STOP_MARKERS)) as stream:
                for piece in stream:
                    text += piece
                    updates.put((slot, text))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            updates.put((slot, exc))
        finally:
            updates.put((slot, finished))

    workers = [threading.Thread(target=contextvars.copy_context().run, args=(produce, slot, messages),
                                name=f"answer-{slot}", daemon=True) for slot, messages in enumerate(shown)]
    for worker in workers:
        worker.start()
    texts, failures, open_slots = ["", ""], [], {0, 1}
    state = TwoAnswers(prompt, "", "", persona_first)
    try:
        while open_slots:
            slot, item = updates.get()
            if item is finished:
                open_slots.discard(slot)
            elif isinstance(item, BaseException):
                failures.append(item)
            elif not cancel.is_set():
                texts[slot] = item
                state = replace(state, first=texts[0], second=texts[1])
                yield state
        if cancel.is_set():
            raise FitCancelled("generation cancelled")
        if failures:
            raise failures[0]
        yield replace(state, first=texts[0].strip(), second=texts[1].strip(), done=True)
    finally:
        cancel.set()
        for worker in workers:
            worker.join()

