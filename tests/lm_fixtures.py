"""Fixtures of the ``test_lm_*`` files (loaded with ``pytest_plugins = ["tests.lm_fixtures"]``): the tiny models,
loaded once per module, and engines over them that are closed after each test."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from synth.lm.config import EngineConfig
from synth.lm.engine import LocalEngine
from synth.lm.loading import LocalModel
from tests.tiny_lm import TEST_DEVICE, build_tiny_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> LocalModel:
    directory = tmp_path_factory.mktemp("tiny-llama")
    return LocalModel(build_tiny_model(directory), device=TEST_DEVICE, dtype="float32").load()


@pytest.fixture(scope="module")
def sliding_model(tmp_path_factory) -> LocalModel:
    directory = tmp_path_factory.mktemp("tiny-gemma")
    return LocalModel(build_tiny_model(directory, sliding_window=8), device=TEST_DEVICE, dtype="float32").load()


@pytest.fixture
def make_engine():
    """``make_engine(model, **config)``: a LocalEngine with that EngineConfig, closed after the test."""
    with ExitStack() as engines:
        def make(model: LocalModel, **config) -> LocalEngine:
            engine = LocalEngine(model, EngineConfig(**config))
            engines.callback(engine.close)
            return engine

        yield make


@pytest.fixture
def engine(tiny_model, make_engine) -> LocalEngine:
    """A batching engine with the default config over the tiny Llama (its own prefix store and counters)."""
    return make_engine(tiny_model)
