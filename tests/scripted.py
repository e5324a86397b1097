"""A scripted DSPy engine whose answers are known, so the three steps can be checked exactly.

The simulated user always prefers the shorter reply. The persona-less judge agrees with them except on replies
that contain the word TRICK (it then picks the other one), so verification has something to reject. Once the
persona "The user prefers short replies." is in the instructions, the judge is always right.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from collections import Counter

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

from synth.data import PreferencePair, Turn
from synth.lm.prompts import request_messages

PERSONA = "The user prefers short replies."
FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond with|\Z)", re.S)


def last_fields(text: str) -> dict[str, str]:
    return {name: value.strip() for name, value in FIELD.findall(text)}


class ScriptedEngine:
    """``complete`` answers judge and persona requests; ``score_choices`` exists only when ``with_scores``."""

    def __init__(self, *, with_scores: bool = True, malformed_verdicts: int = 0, persona: str = PERSONA,
                 prompts=None):
        self.malformed_verdicts = malformed_verdicts  # how many judge calls answer with no usable verdict
        self.persona = persona
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.seen_orders: list[tuple[str, str, bool]] = []  # judge calls: (first, second, persona in instructions)
        self.requests: list[list[dict[str, str]]] = []  # every request's messages, in arrival order
        self.max_tokens: list[int | None] = []  # every completion's max_tokens
        if prompts is not None:  # a synth.lm.prompts.PromptFormat: prompt budgets count with its tokenizer
            self.prompts = prompts
        if with_scores:
            self.score_choices = self._score_choices

    def verdict(self, messages: list[dict[str, str]]) -> tuple[str, str]:
        fields = last_fields(messages[-1]["content"])
        first, second = fields["first_reply"], fields["second_reply"]
        has_persona = self.persona in messages[0]["content"]
        shorter_first = len(first) <= len(second)
        tricked = not has_persona and ("TRICK" in first or "TRICK" in second)
        first_wins = shorter_first != tricked
        reason = "The shorter reply respects the user's time." if not tricked else "The longer reply is richer."
        return ("First" if first_wins else "Second"), reason

    def answer(self, messages: list[dict[str, str]], stop: tuple[str, ...] = ()) -> str:
        """The reply to a chat request in DSPy's format (shared by the engine and the HTTP test server)."""
        text = messages[-1]["content"]
        with self.lock:
            self.requests.append([dict(m) for m in messages])
        if "[[ ## preference_notes ## ]]" in text:
            kind, answer = "persona", ("[[ ## reasoning ## ]]\nThe chosen replies are the short ones.\n\n"
                                       f"[[ ## persona ## ]]\n{self.persona}\n\n[[ ## completed ## ]]")
        elif "Respond with" not in text:  # a plain chat request, e.g. drafting replies: echo the instruction
            kind, answer = "draft", f"Draft in the style asked for: {messages[0]['content']}"
        elif "[[ ## first_reply ## ]]" not in text:  # any other program (e.g. an optimizer's proposer)
            kind = "other"
            fields = re.findall(r"`\[\[ ## (\w+) ## \]\]`", text.rsplit("Respond with", 1)[-1])
            answer = "".join(f"[[ ## {name} ## ]]\nWrite one sentence per trait.\n\n" for name in fields
                             if name != "completed") + "[[ ## completed ## ]]"
        else:
            kind = "judge"
            verdict, reason = self.verdict(messages)
            fields = last_fields(text)
            with self.lock:
                self.seen_orders.append((fields["first_reply"], fields["second_reply"],
                                         self.persona in messages[0]["content"]))
                malformed = self.malformed_verdicts > 0
                self.malformed_verdicts -= malformed
            shown = "I cannot decide." if malformed else verdict
            answer = f"[[ ## reasoning ## ]]\n{reason}\n\n[[ ## preferred ## ]]\n{shown}\n\n[[ ## completed ## ]]"
            if stop and stop[0] in answer:
                answer = answer[: answer.index(stop[0])]
        with self.lock:
            self.calls[kind] += 1
        return answer

    def complete(self, request) -> Response:
        messages = request_messages(request)
        with self.lock:
            self.max_tokens.append(request.config.max_tokens)
        answer = self.answer(messages, tuple(request.config.stop or ()))
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(answer)]),
                        finish_reason="stop",
                        usage=Usage(input_tokens=len(messages[-1]["content"]) // 4, output_tokens=20))

    def _score_choices(self, messages, assistant_prefix, choices):
        verdict, _ = self.verdict(list(messages))
        with self.lock:
            self.calls["score"] += 1
        return [0.8, 0.2] if verdict == choices[0] else [0.2, 0.8]

    def stream(self, request):
        raise RuntimeError("scripted engine does not stream")

    def close(self) -> None:
        """Nothing to release."""


def scripted_lm(**kwargs) -> tuple[dspy.LM, ScriptedEngine]:
    engine = ScriptedEngine(**kwargs)
    return dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=256, cache=False), engine


def make_pairs(n: int, tricks: set[int] = frozenset()) -> list[PreferencePair]:
    """n pairs where the chosen reply is the short one; pair i's replies mention TRICK when i is in ``tricks``."""
    pairs = []
    for i in range(n):
        tag = " TRICK" if i in tricks else ""
        pairs.append(PreferencePair(
            context=(Turn("user", f"Question number {i}: how should I plan topic {i}?"),),
            chosen=Turn("assistant", f"Short answer {i}.{tag}"),
            rejected=Turn("assistant", f"A much longer and more elaborate answer to question {i}, with many "
                                       f"details and digressions that go on and on.{tag}"),
            user_id="u1"))
    return pairs


def make_population(n_users: int = 3, n_pairs: int = 10) -> list[PreferencePair]:
    """Users who all prefer short replies; pairs 1 and 4 of each carry the word that fools the plain judge. Only the
    first user has a demographics text (the Demographics baseline applies to them alone)."""
    return [dataclasses.replace(p, user_id=f"user-{user}", conversation_id=f"c{user}-{i}",
                                extra={"demographics": f"Person number {user}."} if user == 0 else {})
            for user in range(n_users) for i, p in enumerate(make_pairs(n_pairs, {1, 4}))]


@functools.cache
def packaged_tokenizer():
    """The packaged Gemma's tokenizer alone (no weights): from the converted copy when it exists, else the GGUF."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from synth.lm import packaged_model_path
    from synth.lm.loading import LocalModel

    converted = LocalModel(packaged_model_path())._gguf_cache_path()
    if (converted / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(converted)
    gguf = Path(packaged_model_path())
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
