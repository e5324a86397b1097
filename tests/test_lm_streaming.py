"""Token streaming (``synth.lm.stream_chat``): a local reply arrives in pieces while its row decodes in the shared
batch, the pieces join to the reply the engine returns (stop strings never shown), closing the stream or setting its
cancel flag drops the row, and a remote model answers in one piece."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import dspy
import pytest
from dspy.lm15 import Message, Response, TextPart, Usage

from synth.lm import stream_chat
from synth.lm.owners import RequestOwner, owned_by
from synth.lm.sampling import GenerationParams
from synth.lm.scheduler import RequestCancelled

pytest_plugins = ["tests.lm_fixtures"]  # the tiny models and engines

MESSAGES = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "question 3 abc?"}]


def generated(engine, messages, params: GenerationParams):
    return engine.generate([engine.prompts.render(messages)], [params])[0]


@pytest.mark.timeout(120)
def test_pieces_arrive_while_the_row_decodes_and_join_to_the_reply(engine):
    engine.runner.eos_ids = set()
    lm = engine.as_lm()
    steps_seen = []
    pieces = []
    for piece in stream_chat(lm, MESSAGES, max_tokens=24):
        pieces.append(piece)
        steps_seen.append(engine.stats.decode_steps)
    expected = generated(engine, MESSAGES, GenerationParams(max_new_tokens=24))
    assert "".join(pieces) == expected.text and expected.completion_tokens == 24
    assert len(pieces) > 3 and steps_seen[0] < 24  # the first piece came long before the last step


@pytest.mark.timeout(120)
def test_a_stop_string_ends_the_stream_and_is_never_shown(engine):
    lm = engine.as_lm()
    full = "".join(stream_chat(lm, MESSAGES, max_tokens=40))
    stop = full[10:13]  # a stop string the greedy reply is known to write
    streamed = "".join(stream_chat(lm, MESSAGES, max_tokens=40, stop=[stop]))
    assert stop not in streamed and streamed == full[: full.index(stop)]
    assert streamed == generated(engine, MESSAGES, GenerationParams(max_new_tokens=40, stop=(stop,))).text


def wait_until_idle(engine, timeout: float = 60.0) -> None:
    """Until the scheduler has no row decoding or waiting (its steps stop growing)."""
    deadline = time.monotonic() + timeout
    steps = -1
    while time.monotonic() < deadline and steps != engine.stats.decode_steps:
        steps = engine.stats.decode_steps
        time.sleep(0.3)


@pytest.mark.timeout(120)
def test_closing_the_stream_drops_its_row(engine):
    engine.runner.eos_ids = set()
    stream = stream_chat(engine.as_lm(), MESSAGES, max_tokens=400)
    first = next(stream)
    stream.close()
    wait_until_idle(engine)
    assert first and engine.stats.cancelled == 1
    assert engine.stats.decode_steps < 400
    with pytest.raises(StopIteration):
        next(stream)


@pytest.mark.timeout(120)
def test_setting_cancel_ends_the_stream_and_drops_the_row_while_others_decode(engine):
    engine.runner.eos_ids = set()
    cancel = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(generated, engine, [{"role": "user", "content": "another"}],
                            GenerationParams(max_new_tokens=60))
        pieces = []
        for piece in stream_chat(engine.as_lm(), MESSAGES, max_tokens=400, cancel=cancel):
            pieces.append(piece)
            if len(pieces) == 3:
                cancel.set()
        assert other.result().completion_tokens == 60  # the batch-mate is untouched
    wait_until_idle(engine)
    assert len(pieces) == 3 and engine.stats.cancelled == 1 and engine.stats.peak_rows == 2
    assert engine.stats.decode_steps < 400


@pytest.mark.timeout(120)
def test_a_cancelled_owner_ends_its_stream_with_an_error(engine):
    engine.runner.eos_ids = set()
    owner = RequestOwner("visitor")
    with owned_by(owner):
        stream = stream_chat(engine.as_lm(), MESSAGES, max_tokens=400)
    assert next(stream)
    owner.cancel.set()
    with pytest.raises(RequestCancelled):
        list(stream)


class OnePieceEngine:
    """A remote model's stand-in: answers every request with its system prompt and last message."""

    def __init__(self):
        self.requests = []

    def complete(self, request):
        self.requests.append(request)
        text = f"{request.system} / {request.messages[-1].text}"
        return Response(id=None, model="remote", message=Message.assistant([TextPart(text)]), finish_reason="stop",
                        usage=Usage(input_tokens=1, output_tokens=1))


def test_a_remote_model_answers_in_one_piece():
    engine = OnePieceEngine()
    lm = dspy.LM("openai/remote-model", engine=engine, cache=False)
    assert list(stream_chat(lm, MESSAGES, max_tokens=7, temperature=0.5)) == ["Answer briefly. / question 3 abc?"]
    assert engine.requests[0].config.max_tokens == 7 and engine.requests[0].config.temperature == 0.5
    cancel = threading.Event()
    cancel.set()
    assert list(stream_chat(lm, MESSAGES, max_tokens=7, cancel=cancel)) == []
