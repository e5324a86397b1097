"""The scheduler: rows join a running batch as others finish, each caller gets its own answer, a short request does
not wait for a long one, errors stay with their caller, close() never hangs, and without batching the same loop runs
one request at a time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import chain

import pytest

from synth.lm.sampling import GenerationParams
from synth.lm.scheduler import EngineClosed
from tests.tiny_lm import PROMPTS, SHARED, reference_greedy

pytest_plugins = ["tests.lm_fixtures"]  # the tiny models and engines


@pytest.mark.parametrize("model_name", ["tiny_model", "sliding_model"])
def test_rows_join_as_others_finish_and_equal_the_reference(model_name, request, make_engine):
    """Room for 3 rows for 10 prompts: rows join mid-decoding into a cache of another width, some starting from the
    shared instructions; on a sliding-window model the prompts are longer than the window."""
    engine = make_engine(request.getfixturevalue(model_name), cpu_batch_rows=3, gpu_batch_rows=3)
    prompts = [SHARED + prompt for prompt in PROMPTS[:10]]
    lengths = [2 + (i * 7) % 13 for i in range(10)]
    results = engine.generate(prompts, [GenerationParams(max_new_tokens=n) for n in lengths])
    for prompt, n, result in zip(prompts, lengths, results, strict=True):
        assert result.text == reference_greedy(engine, prompt, n)
    assert engine.stats.peak_rows == 3


@pytest.mark.timeout(120)
def test_sixteen_threads_each_get_their_own_answer(tiny_model, make_engine):
    one_at_a_time = make_engine(tiny_model, batching=False)
    expected = dict(zip(PROMPTS, one_at_a_time.generate(
        PROMPTS, [GenerationParams(max_new_tokens=8)] * len(PROMPTS)), strict=True))
    engine = make_engine(tiny_model)

    def call(prompt):
        if PROMPTS.index(prompt) % 2:
            return prompt, engine.choice_probabilities([prompt], ["a", "b"])[0]
        return prompt, engine.generate([prompt], [GenerationParams(max_new_tokens=8)])[0]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, PROMPTS * 2))
    assert len(answers) == 32
    for prompt, answer in answers:
        if PROMPTS.index(prompt) % 2:
            assert answer == pytest.approx(one_at_a_time.choice_probabilities([prompt], ["a", "b"])[0], abs=1e-5)
        else:
            assert answer == expected[prompt]
    assert engine.stats.prefills_run < 32  # calls were really grouped


@pytest.mark.timeout(120)
def test_without_batching_each_request_runs_alone_in_arrival_order(tiny_model, make_engine):
    engine = make_engine(tiny_model, batching=False)
    batched = make_engine(tiny_model)
    params = [GenerationParams(max_new_tokens=6)] * 8
    with ThreadPoolExecutor(8) as pool:
        generations = list(pool.map(lambda p: engine.generate([p], params[:1])[0], PROMPTS[:8]))
        scorings = list(pool.map(lambda p: engine.choice_probabilities([p], ["a", "b"])[0], PROMPTS[:8]))
    listed = engine.generate(PROMPTS[:8], params)  # one submission of 8: still one at a time
    assert generations == listed == batched.generate(PROMPTS[:8], params)
    together = batched.choice_probabilities(PROMPTS[:8], ["a", "b"])
    assert list(chain.from_iterable(scorings)) == pytest.approx(list(chain.from_iterable(together)), abs=1e-5)
    assert engine.stats.peak_rows == 1
    assert engine.stats.prefills_run == 24  # one admission or scoring per request


@pytest.mark.timeout(120)
def test_a_short_request_does_not_wait_for_a_long_one(engine):
    with ThreadPoolExecutor(2) as pool:
        long = pool.submit(engine.generate, [PROMPTS[0]], [GenerationParams(max_new_tokens=300)])
        while engine.stats.decode_steps < 5:
            time.sleep(0.01)
        short = engine.generate([PROMPTS[1]], [GenerationParams(max_new_tokens=3)])[0]
        steps_when_short_done, long_done_then = engine.stats.decode_steps, long.done()
        assert long.result()[0].completion_tokens == 300
    assert short.completion_tokens == 3 and not long_done_then
    assert steps_when_short_done < 300  # it joined the running batch instead of queueing behind it


@pytest.mark.timeout(120)
def test_an_erroring_request_fails_only_its_caller(engine, monkeypatch):
    """A row whose prefill fails (here: any row holding BOOM) fails its own caller; its batch-mates join anyway."""
    runner = engine.runner
    boom = engine.prompts.encode("BOOM")[-4:]
    prefill = runner.prefill

    def fragile_prefill(sequences, *args, **kwargs):
        if any(ids[start: start + len(boom)] == boom for ids in sequences for start in range(len(ids))):
            raise ValueError("cannot prefill BOOM")
        return prefill(sequences, *args, **kwargs)

    monkeypatch.setattr(runner, "prefill", fragile_prefill)
    prompts = [*PROMPTS[:7], "User: BOOM\n\nAssistant:"]

    def call(prompt):
        try:
            return engine.generate([prompt], [GenerationParams(max_new_tokens=4)])[0]
        except ValueError as error:
            return error

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(call, prompts))
    assert isinstance(answers[-1], ValueError) and "BOOM" in str(answers[-1])
    assert all(not isinstance(a, Exception) for a in answers[:-1])
    assert engine.generate([PROMPTS[0]], [GenerationParams(max_new_tokens=4)])[0] == answers[0]


@pytest.mark.timeout(60)
def test_close_answers_every_caller_and_does_not_hang(tiny_model, make_engine):
    engine = make_engine(tiny_model, max_pending=4)
    outcomes: list[object] = []
    lock = threading.Lock()

    def call(prompt):
        try:
            result = engine.generate([prompt], [GenerationParams(max_new_tokens=400)])[0]
        except EngineClosed as error:
            result = error
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=call, args=(p,)) for p in PROMPTS]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    started = time.perf_counter()
    engine.close()
    for thread in threads:
        thread.join(10)
    assert time.perf_counter() - started < 15
    assert not any(thread.is_alive() for thread in threads)
    assert len(outcomes) == len(PROMPTS)
    assert any(isinstance(o, EngineClosed) for o in outcomes)
    assert not engine.scheduler._worker.is_alive()
    with pytest.raises(EngineClosed):
        engine.generate([PROMPTS[0]], [GenerationParams(max_new_tokens=1)])
    engine.close()  # twice is fine
