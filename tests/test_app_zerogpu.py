"""The studio's device tasks run the way ZeroGPU runs them (``spaces`` 0.51, ``spaces/zero/wrappers.py``): each
``spaces.GPU`` call goes to a forked worker process; its arguments and every result (each yield of a generator) are
pickled across; closing the generator sets a stop event, and the worker closes the task's generator at its next
yield. Real ZeroGPU needs a Space, so ``zerogpu`` below reproduces that mechanism with multiprocessing's fork."""

from __future__ import annotations

import inspect
import multiprocessing
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from components import try_handlers as on
from components.contribute import Contributor
from components.labeling import LabelSession
from components.limits import Limits, ModelGate
from components.model_handle import ModelHandle
from components.studio import device_tasks
from components.visitors import Visitors
from synth.store import PersonaStore
from tests.scripted import PERSONA, scripted_lm
from tests.test_try_handlers import BANK

FORK = multiprocessing.get_context("fork")
WORKERS: list = []  # every worker started, so a test can check that none is left running


def zerogpu(task: Callable, duration: int | None = None) -> Callable:
    """``spaces.GPU(duration=...)(task)`` as ZeroGPU runs it: forked worker, pickled arguments and results."""
    if inspect.isgeneratorfunction(task):

        def generator_handler(*args, **kwargs):
            results, stop = FORK.SimpleQueue(), FORK.Event()
            worker = FORK.Process(target=_iterate, args=(task, pickle.dumps((args, kwargs)), results, stop),
                                  daemon=True)
            WORKERS.append(worker)
            worker.start()
            try:
                while (message := results.get())[0] != "end":
                    if message[0] == "error":
                        raise RuntimeError(message[1])
                    try:
                        yield pickle.loads(message[1])
                    except GeneratorExit:
                        stop.set()
                        raise
            finally:
                worker.join(60)

        return generator_handler

    def handler(*args, **kwargs):
        results = FORK.SimpleQueue()
        worker = FORK.Process(target=_call, args=(task, pickle.dumps((args, kwargs)), results), daemon=True)
        WORKERS.append(worker)
        worker.start()
        kind, data = results.get()
        worker.join(60)
        if kind == "error":
            raise RuntimeError(data)
        return pickle.loads(data)

    return handler


def _iterate(task, payload, results, stop) -> None:
    args, kwargs = pickle.loads(payload)
    generator = task(*args, **kwargs)
    try:
        for result in generator:
            if stop.is_set():
                generator.close()
                break
            results.put(("ok", pickle.dumps(result)))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    results.put(("end", None))


def _call(task, payload, results) -> None:
    args, kwargs = pickle.loads(payload)
    try:
        results.put(("ok", pickle.dumps(task(*args, **kwargs))))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.fixture
def parts(tmp_path: Path) -> on.TryParts:
    model = ModelHandle(lambda: scripted_lm()[0]).start()
    model.get(timeout=60)
    visitors = Visitors(tmp_path / "visitors")
    return on.TryParts(model=model, gate=ModelGate(capacity=1), visitors=visitors, limits=Limits(), bank=BANK,
                       device=device_tasks(model, visitors, 240, gpu=zerogpu),
                       contributor=Contributor(PersonaStore(tmp_path / "personas.sqlite"), BANK))


def labeled(parts: on.TryParts, n: int = 6) -> LabelSession:
    session = LabelSession.new(BANK, seed=1)
    parts.visitors.join(session, None)
    for _ in range(n):
        session.choose("left")
    return session


def test_the_session_itself_could_never_cross():
    """What the tab used to hand to the GPU function (issue 14 item 6)."""
    with pytest.raises(TypeError):
        pickle.dumps(LabelSession.new(BANK, seed=0))


def test_a_fit_runs_in_a_forked_worker_and_its_judge_lives_in_the_app(parts):
    session = labeled(parts)
    updates = list(on.run_fit(parts, session, "Quick", True, False))
    *_, final, joined = updates
    assert "Finished" in final[0] and PERSONA in final[3] and "joined the population" in joined[-1]
    assert session.fitted.get_persona() == PERSONA and session.fitted_here  # set here, not in the worker
    assert parts.contributor.store.count() == 1
    verdicts = list(on.test_judge(parts, session, "Which is better?", "Short.", "A much longer reply."))[-1]
    assert "Your judge" in verdicts and "Default judge" in verdicts
    drafted = list(on.ask_own(parts, session, "How should I learn to cook?"))[-1]
    assert "Two drafts are on screen" in drafted[1] and session.current.pair.id.startswith("own-")
    answers = list(on.answer_twice(parts, session, "Plan my weekend."))[-1]
    assert "Answer 1" in answers[0] and answers[3].visible and session.answers is not None
    assert all(worker.exitcode == 0 for worker in WORKERS)


def test_cancel_reaches_the_worker_through_the_closed_generator(parts):
    session = labeled(parts)
    updates = on.run_fit(parts, session, "Quick", False, False)
    next(updates)
    next(updates)  # the first event came back from the worker
    on.cancel(session)
    final = list(updates)[-1]
    assert "Cancelled: nothing was kept" in final[1] and session.fitted is None
    WORKERS[-1].join(60)
    assert WORKERS[-1].exitcode == 0  # the worker closed the fit and ended
