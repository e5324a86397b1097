"""The DSPy engine adapter and what synth.lm builds on it: DSPy calls reach the scheduler, one engine per model and
device in the process, the config that SYNTH_BATCHING and the device choose, fit concurrency, and ZeroGPU wrapping.
One slow test runs the packaged Gemma model."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from concurrent.futures import ThreadPoolExecutor

import dspy
import pytest

from synth.lm import EngineConfig, default_fit_concurrency, fit_threads, gpu_task, loading, local_engine
from synth.lm import engine as engine_module
from synth.lm.engine import EngineRegistry, LocalEngine
from synth.lm.loading import LocalModel
from synth.lm.sampling import GenerationParams
from tests.tiny_lm import PROMPTS, TEST_DEVICE, reference_greedy

pytest_plugins = ["tests.lm_fixtures"]  # the tiny models and engines


def test_a_dspy_call_is_completed_by_the_engine(engine):
    lm = engine.as_lm(max_tokens=5, cache=False)
    assert lm.model == f"local/{engine.local_model.display_name}"
    [text] = lm("question 1?")
    prompt = engine.prompts.render([{"role": "user", "content": "question 1?"}])
    assert text == reference_greedy(engine, prompt, 5)
    assert engine.stats.decode_steps > 0


def test_score_choices_reads_the_choices_after_the_assistant_prefix(engine):
    messages = [{"role": "user", "content": PROMPTS[2]}]
    scores = engine.score_choices(messages, "Verdict: ", ["a", "b"])
    prompt = engine.prompts.render(messages, assistant_prefix="Verdict: ")
    assert scores == pytest.approx(engine.choice_probabilities([prompt], ["a", "b"])[0])
    assert sum(scores) == pytest.approx(1.0)


def test_generate_needs_params_for_every_prompt(engine):
    with pytest.raises(ValueError, match="2 prompts but 1 generation params"):
        engine.generate(PROMPTS[:2], [GenerationParams()])


def test_one_engine_per_model_device_and_quantization_and_a_closed_one_is_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_BATCHING", "0")
    registry = EngineRegistry()
    engine = registry.get("some/model", "cpu")
    assert registry.get("some/model", "cpu") is engine and registry.get("some/model", "cuda") is not engine
    quantized = registry.get("some/model", "cpu", "int8")
    assert quantized is not engine and quantized.local_model.quantize_request == "int8"
    assert engine.local_model.quantize_request == "none"
    assert engine.config == EngineConfig(batching=False) and not engine.local_model.is_loaded
    engine.close()
    replacement = registry.get("some/model", "cpu")
    assert replacement is not engine and not replacement.is_closed
    assert replacement.local_model is engine.local_model  # the same weights
    for made in (replacement, registry.get("some/model", "cuda"), quantized):
        made.close()


@pytest.mark.parametrize("native_bf16", [True, False])
def test_requests_that_resolve_to_the_same_load_share_one_engine(monkeypatch, native_bf16):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native_bf16)
    monkeypatch.setattr(engine_module, "pick_device", lambda requested: "cpu" if requested == "auto" else requested)
    registry = EngineRegistry()
    plain = registry.get("some/model", "cpu", "none")
    assert registry.get("some/model", "auto", "none") is plain  # "auto" is the CPU on this machine
    # Quantization "auto" is none where the CPU runs bf16 natively, and int8 where it does not.
    assert (registry.get("some/model", "auto", "auto") is plain) is native_bf16
    assert (registry.get("some/model", "cpu", "auto") is registry.get("some/model", "cpu", "int8")) is not native_bf16
    with pytest.raises(ValueError, match="int8 quantization runs on the CPU only"):
        registry.get("some/model", "cuda", "int8")


def test_engine_config_batches_unless_disabled_and_resolves_per_device(monkeypatch):
    monkeypatch.delenv("SYNTH_BATCHING", raising=False)
    assert EngineConfig.from_env().batching
    monkeypatch.setenv("SYNTH_BATCHING", "0")
    assert not EngineConfig.from_env().batching
    config = EngineConfig(cpu_batch_rows=3, gpu_batch_rows=9, cpu_prefill_rows=2, gpu_prefill_rows=5)
    assert [config.batch_rows(device) for device in ("cpu", "mps", "cuda")] == [3, 3, 9]
    assert [config.prefill_rows(device) for device in ("cpu", "mps", "cuda")] == [2, 5, 5]
    with pytest.raises(ValueError, match="cpu_batch_rows must be at least 1"):
        EngineConfig(cpu_batch_rows=0)


def test_fits_keep_a_whole_stage_in_flight_only_on_a_gpu(tiny_model, make_engine):
    assert fit_threads(types.SimpleNamespace(model="openai/gpt-4o-mini")) == 16  # remote: no engine
    engine = make_engine(tiny_model, gpu_batch_rows=96)
    assert fit_threads(engine.as_lm()) == (96 if TEST_DEVICE == "cuda" else 16)
    not_loaded_yet = make_engine(LocalModel("some/model", device="cuda"), gpu_batch_rows=96)
    assert fit_threads(not_loaded_yet.as_lm()) == 96 and not not_loaded_yet.local_model.is_loaded


def test_fits_sharing_the_model_are_few_on_a_cpu_and_as_many_as_gpu_memory_holds_rows_for(tiny_model, make_engine,
                                                                                        monkeypatch):
    assert default_fit_concurrency(types.SimpleNamespace(model="openai/gpt-4o-mini")) == 4  # remote: no engine
    engine = make_engine(tiny_model, cpu_fit_concurrency=3, gpu_fit_concurrency=6, rows_per_fit=24)
    if TEST_DEVICE == "cpu":
        assert default_fit_concurrency(engine.as_lm()) == 3
    not_loaded_yet = make_engine(LocalModel("some/model", device="cuda"), gpu_fit_concurrency=6)
    assert default_fit_concurrency(not_loaded_yet.as_lm()) == 6  # memory unknown yet: the most
    runner = engine.runner  # made on this device; then the model is said to be on a GPU
    monkeypatch.setattr(engine.local_model, "device", "cuda")
    for rows, fits in ((128, 5), (30, 1), (10, 1), (1000, 6)):  # rows // 24, at least 1, at most 6
        monkeypatch.setattr(runner, "batch_capacity", lambda tokens, rows=rows: rows)
        assert default_fit_concurrency(engine.as_lm()) == fits


def test_gpu_task_wraps_only_when_spaces_is_present(monkeypatch):
    def fit():
        return "done"

    monkeypatch.setitem(sys.modules, "spaces", None)
    monkeypatch.delitem(sys.modules, "spaces")
    if importlib.util.find_spec("spaces") is None:
        assert gpu_task(fit) is fit
    seen = {}
    fake = types.ModuleType("spaces")
    fake.__spec__ = importlib.machinery.ModuleSpec("spaces", None)

    def fake_gpu(duration):
        seen["duration"] = duration
        return lambda function: (lambda: "on gpu: " + function())

    fake.GPU = fake_gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert gpu_task(duration=300)(fit)() == "on gpu: done" and seen["duration"] == 300


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_packaged_model_batched_equals_sequential():
    from synth.lm import packaged_model_path

    # float32: there batched greedy decoding must equal transformers' generate token for token (in bf16 the
    # batch's shape changes rounding); the app and CLI tests run the bf16 default end to end.
    model = LocalModel(packaged_model_path(), dtype="float32").load()
    engine = LocalEngine(model, EngineConfig())
    alone = LocalEngine(model, EngineConfig(batching=False))
    try:
        prompts = PROMPTS[:4]
        batched = engine.generate(prompts, [GenerationParams(max_new_tokens=6)] * 4)
        for prompt, result in zip(prompts, batched, strict=True):
            assert result.text == reference_greedy(engine, prompt, 6)
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(lambda p: engine.score_choices([{"role": "user", "content": p}], "Verdict: ",
                                                                   ["First", "Second"]), prompts * 4))
        for prompt, answer in zip(prompts * 4, answers, strict=True):
            expected = alone.score_choices([{"role": "user", "content": prompt}], "Verdict: ", ["First", "Second"])
            assert answer == pytest.approx(expected, abs=1e-4)
        assert isinstance(local_engine(packaged_model_path(), "cpu").as_lm(), dspy.LM)
    finally:
        engine.close()
        alone.close()
