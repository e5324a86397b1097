"""Choosing each row's next token and stopping it: per-request temperature with seeded sampling, and stop strings."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationParams:
    """One generation request's limits: new tokens, temperature (0: greedy) and stop strings."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    stop: tuple[str, ...] = ()


def seeded_generator(prompt: str, device: str):
    """Seed from the prompt so the same request samples the same text whatever batch it lands in: fits are
    reproducible."""
    import torch

    generator = torch.Generator(device=device)
    generator.manual_seed(int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16))
    return generator


def pick_tokens(logits, temperatures: Sequence[float], generators: Sequence):
    """Greedy for rows at temperature 0, plain sampling (no top-k/top-p) with the row's own generator otherwise."""
    import torch

    chosen = logits.argmax(-1)
    for slot, (temperature, generator) in enumerate(zip(temperatures, generators, strict=True)):
        if generator is not None:
            probs = torch.softmax(logits[slot] / temperature, -1)
            chosen[slot] = torch.multinomial(probs, 1, generator=generator)[0]
    return chosen


class StopOnText:
    """Tells whether a row's latest token completed one of its stop strings (asked after every token).

    A stop string can only be completed by a token whose own text holds its last character (or by a byte piece of
    a longer character), so the row's tail is decoded only after such tokens, and what each token can do is
    learnt once: decoding every row's tail after every token would cost a noticeable share of a large batch's
    step. transformers' ``stop_strings`` precomputes tables over the whole vocabulary on every call, which takes
    seconds with Gemma's 262k tokens.
    """

    def __init__(self, tokenizer, stops: Sequence[str], window: int = 24):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.window = window
        self._last_characters = {s[-1] for s in self.stops}
        self._may_end: dict[int, bool] = {}

    def __call__(self, tokens: Sequence[int]) -> bool:
        if not tokens or not self.stops:
            return False
        may_end = self._may_end.get(tokens[-1])
        if may_end is None:
            piece = self.tokenizer.decode([tokens[-1]])
            may_end = self._may_end[tokens[-1]] = (not piece or "\ufffd" in piece
                                                   or any(c in piece for c in self._last_characters))
        if not may_end:
            return False
        tail = self.tokenizer.decode(list(tokens[-self.window:]), skip_special_tokens=True)
        return any(stop in tail for stop in self.stops)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Trim generated text at the first stop string (decoding keeps the stop string itself)."""
    positions = [text.find(s) for s in stops if s and s in text]
    if not positions:
        return text, False
    return text[: min(positions)], True


class TextPieces:
    """A streamed row's text, handed out in pieces that only ever extend what was handed out before.

    Each new token re-decodes the row's tokens (a piece of a character decodes to U+FFFD until its last byte
    arrives) and gives out the new text, except a tail that could still become one of ``stops``: the row stops at
    a stop string and its reply is cut there, so that text must never be shown.
    """

    def __init__(self, tokenizer, stops: Sequence[str]):
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.tokens: list[int] = []
        self.sent = ""

    def add(self, token: int) -> str:
        self.tokens.append(token)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        text, _ = cut_at_stop(text, self.stops)
        return self._extend(text[: len(text) - self._held(text)])

    def finish(self, text: str) -> str:
        """The rest of the reply once the row is done (``text``: the engine's final reply)."""
        return self._extend(text)

    def _held(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins one of the stop strings."""
        longest = min(len(text), max((len(s) - 1 for s in self.stops), default=0))
        for size in range(longest, 0, -1):
            if any(stop.startswith(text[-size:]) for stop in self.stops):
                return size
        return 0

    def _extend(self, text: str) -> str:
        if len(text) <= len(self.sent) or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent):], text
        return piece
