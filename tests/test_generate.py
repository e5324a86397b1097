"""synth.generate: two contrasting drafts for a visitor's own prompt, and one prompt answered with and without the
persona, streamed side by side."""

from __future__ import annotations

import itertools
import threading

import pytest

import synth.generate as generate
from synth.data import PreferencePair
from synth.generate import (
    DRAFT_STYLES,
    MAX_ANSWER_TOKENS,
    PAIR_SOURCE,
    TwoAnswers,
    answer_with_and_without,
    draft_two_responses,
    generation_prompt,
)
from synth.parallel import FitCancelled
from synth.pipeline import SynthesizeMe
from tests.scripted import PERSONA, scripted_lm

ARTIFACT = {"persona": PERSONA, "demos": [], "config": {}}
PLAIN_ANSWER = "Boil it for nine minutes, then cool it in cold water."
PERSONA_ANSWER = "Nine minutes."


def test_draft_two_responses_gives_two_different_replies_and_refuses_bad_prompts():
    lm, engine = scripted_lm()
    compact, thorough = draft_two_responses(lm, "How do I boil an egg?")
    assert DRAFT_STYLES[0][0] in compact and DRAFT_STYLES[1][0] in thorough and engine.calls["draft"] == 2
    with pytest.raises(ValueError, match="write a prompt"):
        draft_two_responses(lm, "   ")
    with pytest.raises(ValueError, match="under 2000"):
        draft_two_responses(lm, "x" * 2001)


class WordStream:
    """Stands in for ``synth.lm.stream_chat``: answers word by word, a short answer when there is a system prompt and
    a longer one when there is none, waits up to ``pause`` seconds for ``cancel`` after each word, and records every
    request and whether its stream ended with ``cancel`` set."""

    def __init__(self, answers: tuple[str, str] = (PLAIN_ANSWER, PERSONA_ANSWER), fail: bool = False,
                 pause: float = 0.0):
        self.plain, self.with_system = answers
        self.fail = fail
        self.pause = pause
        self.requests: list[tuple[list[dict[str, str]], int, float, tuple[str, ...]]] = []
        self.lock = threading.Lock()
        self.stopped: list[bool] = []

    def __call__(self, lm, messages, max_tokens, cancel=None, temperature=0.0, stop=()):
        with self.lock:
            self.requests.append((messages, max_tokens, temperature, tuple(stop)))
        if self.fail:
            raise RuntimeError("the model went away")
        text = self.with_system if messages[0]["role"] == "system" else self.plain
        words = text.split(" ")
        try:
            for index, word in enumerate(words):
                yield word if index == 0 else " " + word
                if index + 1 < len(words) and cancel.wait(self.pause):
                    return
        finally:
            with self.lock:
                self.stopped.append(cancel.is_set())


@pytest.fixture
def words(monkeypatch) -> WordStream:
    stream = WordStream()
    monkeypatch.setattr(generate, "stream_chat", stream)
    return stream


def run(lm, prompt="How do I boil an egg?", **kwargs) -> list[TwoAnswers]:
    return list(answer_with_and_without(lm, ARTIFACT, prompt, **kwargs))


def test_answers_with_and_without_the_persona_stream_side_by_side(words):
    lm, _ = scripted_lm()
    updates = run(lm, max_tokens=64)
    final = updates[-1]
    assert final.done and not any(update.done for update in updates[:-1])
    assert final.without_persona == PLAIN_ANSWER and final.with_persona == PERSONA_ANSWER
    assert {final.first, final.second} == {PLAIN_ANSWER, PERSONA_ANSWER}
    # every word arrives as its own update, and an answer only ever grows
    assert len(updates) == len(PLAIN_ANSWER.split()) + len(PERSONA_ANSWER.split()) + 1
    for before, after in itertools.pairwise(updates):
        assert after.first.startswith(before.first) and after.second.startswith(before.second)
    plain, persona = sorted(words.requests, key=lambda request: len(request[0]))
    assert plain[0] == [{"role": "user", "content": "How do I boil an egg?"}]  # A: no system prompt at all
    assert persona[0][0] == {"role": "system", "content": generation_prompt(ARTIFACT)}  # B: the generation prompt
    assert PERSONA in persona[0][0]["content"] and persona[0][1]["content"] == "How do I boil an egg?"
    # same length limit, both greedy: the persona is the only difference; a base model's transcript stops at the
    # user's next turn
    assert plain[1:] == persona[1:] == (64, 0.0, ("\nUser:",))


def test_the_shown_order_is_drawn_from_the_seed(words):
    lm, _ = scripted_lm()
    orders = {seed: run(lm, seed=seed)[-1].persona_first for seed in range(12)}
    assert set(orders.values()) == {True, False}  # both orders happen
    assert all(run(lm, seed=seed)[-1].persona_first == order for seed, order in list(orders.items())[:4])
    for seed, persona_first in orders.items():
        final = run(lm, seed=seed)[-1]
        assert final.first == (PERSONA_ANSWER if persona_first else PLAIN_ANSWER)


def test_answers_are_bounded(words):
    lm, _ = scripted_lm()
    run(lm, max_tokens=100_000)
    run(lm, max_tokens=0)
    assert sorted({request[1] for request in words.requests}) == [1, MAX_ANSWER_TOKENS]
    words.requests.clear()
    with pytest.raises(ValueError, match="write a prompt"):
        run(lm, prompt="  ")
    with pytest.raises(ValueError, match="under 2000"):
        run(lm, prompt="x" * 2001)
    assert words.requests == []  # refused before any model call


def test_answers_leave_room_in_the_models_context(words, monkeypatch):
    from synth.lm.budget import prompt_budget

    monkeypatch.setenv("SYNTH_CONTEXT_TOKENS", "256")
    lm, _ = scripted_lm()
    persona_messages = [{"role": "system", "content": generation_prompt(ARTIFACT)},
                        {"role": "user", "content": "How do I boil an egg?"}]
    room = 256 - prompt_budget(lm).count(persona_messages)
    assert 0 < room < MAX_ANSWER_TOKENS
    run(lm, max_tokens=MAX_ANSWER_TOKENS)
    assert {request[1] for request in words.requests} == {room}
    words.requests.clear()
    with pytest.raises(ValueError, match="leaving no room for an answer"):
        run(lm, prompt="Tell me about eggs. " * 60)
    assert words.requests == []


@pytest.fixture
def slow_words(monkeypatch) -> WordStream:
    """Streams that wait for cancel after each word (up to a minute): only cancelling ends them quickly."""
    stream = WordStream(pause=60.0)
    monkeypatch.setattr(generate, "stream_chat", stream)
    return stream


def test_setting_cancel_stops_both_answers_and_raises(slow_words):
    lm, _ = scripted_lm()
    cancel = threading.Event()
    updates = answer_with_and_without(lm, ARTIFACT, "How do I boil an egg?", cancel=cancel)
    first = next(updates)
    assert not first.done and len(first.first.split()) + len(first.second.split()) == 1
    cancel.set()
    with pytest.raises(FitCancelled):
        list(updates)
    assert slow_words.stopped == [True, True]  # both streams ended early, with cancel set


def test_closing_the_iterator_early_stops_both_answers(slow_words):
    lm, _ = scripted_lm()
    cancel = threading.Event()
    updates = answer_with_and_without(lm, ARTIFACT, "How do I boil an egg?", cancel=cancel)
    next(updates)
    updates.close()
    assert cancel.is_set() and slow_words.stopped == [True, True]


def test_a_model_failure_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(generate, "stream_chat", WordStream(fail=True))
    lm, _ = scripted_lm()
    with pytest.raises(RuntimeError, match="went away"):
        run(lm)


def test_the_persona_comes_from_a_fitted_model_or_an_artifact(words):
    lm, _ = scripted_lm()
    model = SynthesizeMe.from_artifact(ARTIFACT, lm=lm)
    assert generation_prompt(model) == generation_prompt(ARTIFACT) == model.get_generation_prompt()
    assert list(answer_with_and_without(lm, model, "Hi?"))[-1].with_persona == PERSONA_ANSWER
    with pytest.raises(ValueError, match="persona"):
        generation_prompt({"demos": [], "config": {}})


def test_the_real_model_path_sends_the_generation_prompt_as_the_system_prompt():
    lm, engine = scripted_lm()  # the scripted model echoes the instructions it was given
    final = list(answer_with_and_without(lm, ARTIFACT, "How do I boil an egg?"))[-1]
    assert final.done and "How do I boil an egg?" in final.without_persona and PERSONA in final.with_persona
    assert PERSONA not in final.without_persona and engine.calls["draft"] == 2


@pytest.mark.parametrize("persona_first", [True, False])
@pytest.mark.parametrize("first_preferred", [True, False])
def test_a_choice_becomes_a_labelled_pair(persona_first, first_preferred):
    with_persona, without = "Nine minutes.", "Boil it for nine minutes, then cool it."
    answers = TwoAnswers("Egg?", *((with_persona, without) if persona_first else (without, with_persona)),
                         persona_first=persona_first, done=True)
    pair = answers.preferred_pair(first_preferred, user_id="studio-visitor")
    assert pair.chosen.content == (answers.first if first_preferred else answers.second)
    assert pair.rejected.content == (answers.second if first_preferred else answers.first)
    assert pair.prompt == "Egg?" and pair.user_id == "studio-visitor" and pair.extra["source"] == PAIR_SOURCE
    assert pair.extra["chosen_with_persona"] == (first_preferred == persona_first)
    assert pair.extra["shown_first"] == ("chosen" if first_preferred else "rejected")
    assert PreferencePair.from_dict(pair.to_dict()) == pair  # a valid row of the official format


def test_a_choice_needs_two_complete_different_answers():
    with pytest.raises(ValueError, match="still being written"):
        TwoAnswers("Egg?", "Nine", "Boil", persona_first=True).preferred_pair(True)
    with pytest.raises(ValueError, match="identical"):
        TwoAnswers("Egg?", "Nine minutes.", "Nine minutes. ", persona_first=True, done=True).preferred_pair(True)
    with pytest.raises(ValueError, match="empty"):
        TwoAnswers("Egg?", "", "Nine minutes.", persona_first=False, done=True).preferred_pair(False)


@pytest.mark.slow
def test_the_packaged_model_streams_both_answers_and_stops_when_cancelled():
    from synth.lm import build_lm, stream_chat

    lm = build_lm("offline")
    updates = list(answer_with_and_without(lm, ARTIFACT, "How do I boil an egg?", max_tokens=24))
    final = updates[-1]
    assert final.done and len(updates) > 3  # pieces arrive as they are decoded, not as two whole answers
    assert "\nUser:" not in final.first and "\nUser:" not in final.second
    cancel = threading.Event()
    running = answer_with_and_without(lm, ARTIFACT, "Plan a week of dinners.", max_tokens=MAX_ANSWER_TOKENS,
                                      cancel=cancel)
    next(running)
    cancel.set()
    with pytest.raises(FitCancelled):
        list(running)
    # the engine drops cancelled rows at its next step: one more short reply makes sure that step has run, so no
    # decoding is under way when the test process exits
    list(stream_chat(lm, [{"role": "user", "content": "Hi"}], 1))
