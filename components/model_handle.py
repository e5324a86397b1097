"""Load the LM in a background thread so the page is usable (labeling needs no model) while weights load."""

from __future__ import annotations

import threading
from collections.abc import Callable

import dspy

from synth.lm import describe

SWITCH_HINT = "Llama 3.2 3B needs a GPU: set SYNTH_MODEL=llama-3.2-3b and HF_TOKEN."


class ModelHandle:
    def __init__(self, factory: Callable[[], dspy.BaseLM]):
        self._factory = factory
        self._ready = threading.Event()
        self._lm: dspy.BaseLM | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._load, name="synth-model-load", daemon=True)
        self._start_lock = threading.Lock()

    def start(self) -> ModelHandle:
        """Begin loading (once; later calls do nothing)."""
        with self._start_lock:
            if self._thread.ident is None:
                self._thread.start()
        return self

    def _load(self) -> None:
        try:
            lm = self._factory()
            engine = getattr(lm, "engine", None)
            if hasattr(engine, "local_model"):
                engine.local_model.load()  # weights now, not on the first click
            self._lm = lm
        except Exception as exc:  # shown in the status line; every model action reports it
            self._error = exc
        finally:
            self._ready.set()

    def get(self, timeout: float | None = None) -> dspy.BaseLM:
        """The LM, waiting for the load; raises RuntimeError if loading failed or timed out."""
        if not self._ready.wait(timeout):
            raise RuntimeError("the model is still loading; try again in a moment")
        if self._error is not None:
            raise RuntimeError(f"the model failed to load: {self._error}")
        return self._lm

    def status(self) -> str:
        if not self._ready.is_set():
            return "Loading the model… you can start labeling meanwhile."
        if self._error is not None:
            return f"The model failed to load: {self._error}. {SWITCH_HINT}"
        info = describe(self._lm)
        where = info.device.upper() if info.device in ("cpu", "cuda", "mps") else info.device
        if info.is_packaged_demo:
            return (f"● Gemma 3 270M base, {where} — offline demo model; personas will be weak. {SWITCH_HINT}")
        return f"● {info.name}, {where}. Switch with SYNTH_MODEL (see README)."
