"""The scheduler: rows join a running batch as others finish, each caller gets its own answer, a short request does
not wait for a long one, errors stay with their caller, close() never hangs, without batching the same loop runs
one request at a time, visitors (request owners) share the room fairly and cancel only their own work, and a process
that exits while its engine decodes exits cleanly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from pathlib import Path

import pytest

from synth.lm.owners import RequestOwner, owned_by
from synth.lm.sampling import GenerationParams
from synth.lm.scheduler import EngineClosed, RequestCancelled
from synth.parallel import run_concurrently
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


EXIT_WHILE_DECODING = textwrap.dedent("""
    import sys, threading
    from synth.lm.engine import LocalEngine
    from synth.lm.loading import LocalModel
    from synth.lm.sampling import GenerationParams

    engine = LocalEngine(LocalModel(sys.argv[1], device="cpu", dtype="float32"))
    long = GenerationParams(max_new_tokens=400)
    threading.Thread(target=engine.generate, args=(["User: a long story\\n\\nAssistant:"], [long]),
                     daemon=True).start()
    stream = engine.stream_text([{"role": "user", "content": "hello"}], long)
    next(stream)
    print("decoding", flush=True)
""")


@pytest.mark.timeout(120)
def test_a_process_that_exits_while_its_engine_decodes_exits_cleanly(tiny_model):
    """The scheduler's worker is stopped at exit: without that, the interpreter tears down under a thread still
    inside the model and the C++ runtime aborts the process."""
    done = subprocess.run([sys.executable, "-c", EXIT_WHILE_DECODING, tiny_model.source], capture_output=True,
                          text=True, timeout=100, cwd=Path(__file__).resolve().parents[1])
    assert "decoding" in done.stdout, done.stderr
    assert "terminate called" not in done.stderr
    assert done.returncode == 0, done.stderr[-2000:]


def _generate_as(owner, engine, prompts, params, done: list, lock: threading.Lock):
    """``engine.generate`` one prompt per call on threads copying this context, under ``owner``; each answer (or
    error) is appended to ``done`` as ``(owner name, prompt, answer)`` when it arrives."""
    def one(prompt):
        try:
            answer = engine.generate([prompt], [params])[0]
        except Exception as error:
            answer = error
        with lock:
            done.append((owner.name, prompt, answer))

    with owned_by(owner):
        return list(run_concurrently(one, prompts, len(prompts)))


def _hold_decoding(engine, monkeypatch, after_steps: int, until_jobs: int, then=None) -> None:
    """Make the worker wait, after ``after_steps`` decoding steps, until ``until_jobs`` requests have been submitted
    (then call ``then``): what is queued when rows free up no longer depends on how busy the machine is."""
    submitted = []
    arrived = threading.Condition()
    submit, step = engine.scheduler.submit, engine.scheduler._step

    def counted_submit(jobs):
        submit(jobs)
        with arrived:
            submitted.extend(jobs)
            arrived.notify_all()

    def held_step(batch):
        if engine.stats.decode_steps == after_steps:
            with arrived:
                assert arrived.wait_for(lambda: len(submitted) >= until_jobs, timeout=60)
            if then is not None:
                then()
        return step(batch)

    monkeypatch.setattr(engine.scheduler, "submit", counted_submit)
    monkeypatch.setattr(engine.scheduler, "_step", held_step)


@pytest.mark.timeout(300)
def test_a_second_visitor_gets_room_before_the_first_visitors_backlog(tiny_model, make_engine, monkeypatch):
    """Two rows of room, six rows of visitor A waiting, then one of visitor B: when rows free up, B (no row
    decoding) joins before A's backlog, although its prompt is the longest (rows otherwise join shortest first)."""
    engine = make_engine(tiny_model, cpu_batch_rows=2, gpu_batch_rows=2)
    engine.runner.eos_ids = set()
    _hold_decoding(engine, monkeypatch, after_steps=1, until_jobs=7)  # A's first two rows wait for B to queue
    first, second = RequestOwner("A"), RequestOwner("B")
    params = GenerationParams(max_new_tokens=6)
    done: list = []
    lock = threading.Lock()
    with ThreadPoolExecutor(2) as pool:
        backlog = pool.submit(_generate_as, first, engine, PROMPTS[:6], params, done, lock)
        while engine.stats.decode_steps < 1:
            time.sleep(0.005)
        late = pool.submit(_generate_as, second, engine, [SHARED + PROMPTS[6]], params, done, lock)
        backlog.result(), late.result()
    order = [name for name, _, _ in done]
    assert sorted(order) == ["A"] * 6 + ["B"]
    assert order.index("B") <= 3  # it joined with the second wave, not after A's six
    assert all(not isinstance(answer, Exception) for _, _, answer in done)


@pytest.mark.timeout(300)
def test_cancelling_one_visitor_drops_its_rows_and_keeps_the_others(tiny_model, make_engine, monkeypatch):
    """Visitor A's running and queued rows go when A cancels; B's rows, one of them identical to one of A's (so
    they shared a row), finish with the text they get alone."""
    engine = make_engine(tiny_model, cpu_batch_rows=3, gpu_batch_rows=3)
    engine.runner.eos_ids = set()
    shared_prompt = PROMPTS[7]
    first, second = RequestOwner("A"), RequestOwner("B")
    long_params, params = GenerationParams(max_new_tokens=300), GenerationParams(max_new_tokens=12)
    alone = make_engine(tiny_model)
    alone.runner.eos_ids = set()
    expected = dict(zip([shared_prompt, PROMPTS[8]], alone.generate([shared_prompt, PROMPTS[8]],
                                                                    [long_params, params]), strict=True))
    # A cancels after 3 decoding steps, once A's five requests and B's identical one are all in
    _hold_decoding(engine, monkeypatch, after_steps=3, until_jobs=6, then=first.cancel.set)
    done: list = []
    lock = threading.Lock()
    with ThreadPoolExecutor(3) as pool:
        a_long = pool.submit(_generate_as, first, engine, [shared_prompt, *PROMPTS[:4]], long_params, done, lock)
        b_shared = pool.submit(_generate_as, second, engine, [shared_prompt], long_params, done, lock)
        first.cancel.wait(60)
        b_short = pool.submit(_generate_as, second, engine, [PROMPTS[8]], params, done, lock)
        a_long.result(), b_shared.result(), b_short.result()
    answers = {(name, prompt): answer for name, prompt, answer in done}
    assert all(isinstance(answers[("A", p)], RequestCancelled) for p in [shared_prompt, *PROMPTS[:4]])
    assert answers[("B", shared_prompt)] == expected[shared_prompt]
    assert answers[("B", PROMPTS[8])] == expected[PROMPTS[8]]
    assert engine.stats.cancelled == 5
    assert engine.stats.decode_steps < 300 + 12  # A's other rows did not run on (they would need 300 more steps)


def test_requests_carry_the_owner_of_their_scope_into_worker_threads(engine, monkeypatch):
    seen = []
    submit = engine.scheduler.submit

    def recorded(jobs):
        seen.extend(job.owner for job in jobs)
        return submit(jobs)

    monkeypatch.setattr(engine.scheduler, "submit", recorded)
    owner = RequestOwner("visitor")
    with owned_by(owner):
        list(run_concurrently(lambda p: engine.choice_probabilities([p], ["a", "b"]), PROMPTS[:4], 4))
    engine.generate(PROMPTS[:1], [GenerationParams(max_new_tokens=1)])
    assert seen == [owner] * 4 + [None]


def test_an_owner_scope_in_a_generator_resumed_in_another_context_closes_cleanly():
    """A server may resume a handler's generator on another worker thread: leaving the scope there must not fail."""
    import contextvars

    from synth.lm.owners import current_owner

    def handler():
        with owned_by(name="visitor") as owner:
            yield current_owner() is owner

    steps = handler()
    assert contextvars.copy_context().run(next, steps)
    with pytest.raises(StopIteration):
        contextvars.copy_context().run(next, steps)
    assert current_owner() is None
