"""Model loading: once per model however many threads ask, left padding for batches, device and dtype choice, and
converted GGUF weights cached under synth's cache folder, keyed by the file."""

from __future__ import annotations

import os
import threading
import time

import torch

from synth.lm.loading import LocalModel, pick_device, pick_dtype
from tests.tiny_lm import TEST_DEVICE, build_tiny_model


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


def test_device_and_dtype_follow_the_request_or_the_hardware():
    assert pick_device("cpu") == "cpu" and pick_device("auto") in ("cuda", "mps", "cpu")
    assert pick_dtype("cpu", "float32") is torch.float32
    assert pick_dtype("cuda") is torch.bfloat16
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
