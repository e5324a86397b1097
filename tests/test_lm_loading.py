"""Model loading: once per model however many threads ask, left padding for batches, device and dtype choice, and
converted GGUF weights cached under synth's cache folder, keyed by the file."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch

from synth.lm.loading import (
    LocalModel,
    cpu_has_native_bf16,
    onednn_allows_bf16,
    pick_device,
    pick_dtype,
    pick_quantization,
)
from tests.tiny_lm import TEST_DEVICE, build_tiny_model

pytest_plugins = ["tests.lm_fixtures"]  # make_engine


def test_a_model_loads_once_however_many_threads_ask(tmp_path, monkeypatch):
    model = LocalModel(build_tiny_model(tmp_path / "m"), device=TEST_DEVICE, dtype="float32")
    assert not model.is_loaded and model.device == "unloaded"
    loads = []
    real_load = LocalModel._load

    def slow_load(self):
        loads.append(self)
        time.sleep(0.2)
        real_load(self)

    monkeypatch.setattr(LocalModel, "_load", slow_load)
    threads = [threading.Thread(target=model.load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert loads == [model] and model.is_loaded and model.device == TEST_DEVICE
    assert model.load() is model and model.load_seconds >= 0.2
    assert model.tokenizer.padding_side == "left" and model.tokenizer.pad_token_id is not None
    assert model.model.dtype == torch.float32


def test_device_and_dtype_follow_the_request_or_the_hardware(monkeypatch):
    assert pick_device("cpu") == "cpu" and pick_device("auto") in ("cuda", "mps", "cpu")
    assert pick_dtype("cpu", "float32") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert pick_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)  # a T4: fp16 tensor cores
    assert pick_dtype("cuda") is torch.float16
    assert pick_dtype("cuda", "float32") is torch.float32
    assert pick_dtype("mps") is torch.float32
    assert pick_dtype("cpu") in (torch.bfloat16, torch.float32)  # bf16 only where the CPU multiplies it natively


def test_converted_gguf_weights_are_cached_under_synth_cache_and_keyed_by_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny-q4.gguf"
    gguf.write_bytes(b"weights")
    model = LocalModel(str(gguf))
    assert model.is_gguf and model.display_name == "tiny-q4.gguf"
    first = model._gguf_cache_path()
    assert first.parent == tmp_path / "cache" / "models" and first.name.startswith("tiny-q4-")
    assert model._gguf_cache_path() == first
    gguf.write_bytes(b"other weights")
    os.utime(gguf, ns=(1, 1))
    assert model._gguf_cache_path() != first  # a changed file is converted again


def test_prepare_converts_a_gguf_once_and_loads_it_without_any_network(tmp_path, monkeypatch, capsys):
    """``synth prepare`` (run by scripts/setup.sh) converts the GGUF into the cache with progress lines, a second run
    finds it done, and nothing asks the network for a local file (here any connection attempt fails)."""
    import socket

    from synth.cli import main

    def no_network(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    gguf = tmp_path / "tiny-q4.gguf"
    gguf.write_bytes(b"weights")
    conversions = []

    def convert(model, target):  # the real conversion de-quantizes a GGUF; a tiny checkpoint stands in for it
        conversions.append(target)
        build_tiny_model(target)

    monkeypatch.setattr(LocalModel, "_convert_gguf", convert)
    assert main(["prepare", "--model", str(gguf), "--device", "cpu"]) == 0
    first = capsys.readouterr().out
    assert "converting tiny-q4.gguf" in first and "converted in" in first and "ready: tiny-q4.gguf on cpu" in first
    assert main(["prepare", "--model", str(gguf), "--device", "cpu"]) == 0
    second = capsys.readouterr().out
    assert "converting" not in second and "ready:" in second
    assert conversions == [LocalModel(str(gguf))._gguf_cache_path()]
    assert main(["prepare", "--model", "openai/gpt-4o-mini", "--quiet"]) == 0 and capsys.readouterr().out == ""


def test_a_cpu_has_native_bf16_only_where_onednn_may_use_it(monkeypatch):
    for isa in (None, "", "AVX512_CORE_BF16", "avx512_core_amx", "AVX10_1_512_AMX", "ALL"):
        assert onednn_allows_bf16(isa), isa
    for isa in ("AVX2", "avx2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI", "SSE41"):
        assert not onednn_allows_bf16(isa), isa
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)  # this project's Intel Xeon
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    assert cpu_has_native_bf16() and pick_dtype("cpu") is torch.bfloat16
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # the AVX2-only emulation: bf16 would be emulated, slow
    assert not cpu_has_native_bf16() and pick_dtype("cpu") is torch.float32
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # an AMD EPYC with AVX2 only
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    assert not cpu_has_native_bf16() and pick_dtype("cpu") is torch.float32


def test_auto_quantization_is_int8_only_where_a_cpu_without_native_bf16_would_run_fp32():
    assert pick_quantization("cpu", native_bf16=False) == "int8"  # e.g. an AMD EPYC with AVX2 only
    assert pick_quantization("cpu", native_bf16=True) == "none"  # AMX or AVX512-BF16: bf16
    assert pick_quantization("cpu", "float32", native_bf16=False) == "none"  # a dtype by name: exactly that
    assert pick_quantization("cpu", "bfloat16", native_bf16=False) == "none"
    for device in ("cuda", "mps"):
        assert pick_quantization(device, native_bf16=False) == "none", device
    assert pick_quantization("cpu", "auto", "none", native_bf16=False) == "none"  # asked for: as asked
    assert pick_quantization("cpu", "float32", "int8", native_bf16=True) == "int8"
    with pytest.raises(ValueError, match="int8 quantization runs on the CPU only, not on cuda"):
        pick_quantization("cuda", "auto", "int8")


def test_quantization_is_chosen_at_load_and_checked_at_once(tmp_path):
    with pytest.raises(ValueError, match="quantize must be one of auto, none, int8"):
        LocalModel("some/model", quantize="int4")
    directory = build_tiny_model(tmp_path / "m")
    model = LocalModel(directory, device="cpu")
    assert model.quantize_request == "none" and model.quantization == "unloaded"  # int8 only when asked for
    assert model.precision == "unloaded"
    exact = LocalModel(directory, device="cpu", dtype="float32", quantize="auto").load()
    assert exact.quantization == "none" and exact.precision == "float32"  # a dtype by name: exactly that


def test_an_int8_model_runs_its_linear_layers_quantized_and_scores_close_to_fp32(tmp_path, make_engine):
    from synth.lm.sampling import GenerationParams
    from tests.tiny_lm import PROMPTS

    directory = build_tiny_model(tmp_path / "m")
    exact = LocalModel(directory, device="cpu", dtype="float32", quantize="none").load()
    quantized = LocalModel(directory, device="cpu", dtype="float32", quantize="int8").load()
    assert exact.quantization == "none" and quantized.quantization == "int8"
    assert quantized.precision == "float32, int8 linear layers"
    kinds = (torch.nn.Linear, torch.ao.nn.quantized.dynamic.Linear)
    linear = {name: module for name, module in quantized.model.named_modules() if isinstance(module, kinds)}
    assert len(linear) == 2 * 7 + 1  # per layer q, k, v, o, gate, up, down; and the output layer
    for name, module in linear.items():  # all int8 but the MLPs' output projections
        assert isinstance(module, torch.ao.nn.quantized.dynamic.Linear) != name.endswith("down_proj"), name
    assert quantized.model.dtype == torch.float32  # activations, norms and the cache stay fp32
    reference, fast = make_engine(exact), make_engine(quantized)
    for prompt, want, got in zip(PROMPTS[:6], reference.choice_probabilities(PROMPTS[:6], ["a", "b"]),
                                 fast.choice_probabilities(PROMPTS[:6], ["a", "b"]), strict=True):
        assert got == pytest.approx(want, abs=0.05), prompt
    [result] = fast.generate(PROMPTS[:1], [GenerationParams(max_new_tokens=8)])
    assert result.completion_tokens > 0
