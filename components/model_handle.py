"""Load the LM in a background thread so the page is usable (labeling needs no model) while weights load."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import dspy

from synth.lm import describe

SWITCH_HINT = "Llama 3.2 3B needs a GPU: set SYNTH_MODEL=llama-3.2-3b and HF_TOKEN."


class ModelLoadFailed(RuntimeError):
    """The model could not be loaded; the message says why and what to change."""


class ModelHandle:
    """The app's model, loaded once in the background; ``on_ready`` callbacks run with the LM once it is loaded."""

    def __init__(self, factory: Callable[[], dspy.BaseLM],
                 on_ready: tuple[Callable[[dspy.BaseLM], None], ...] = ()):
        self._factory = factory
        self._on_ready = on_ready
        self._ready = threading.Event()
        self._lm: dspy.BaseLM | None = None
        self._error: BaseException | None = None
        self._started_at: float | None = None
        self._thread = threading.Thread(target=self._load, name="synth-model-load", daemon=True)
        self._start_lock = threading.Lock()

    def start(self) -> ModelHandle:
        """Begin loading (once; later calls do nothing)."""
        with self._start_lock:
            if self._thread.ident is None:
                self._started_at = time.monotonic()
                self._thread.start()
        return self

    def _load(self) -> None:
        try:
            lm = self._factory()
            engine = getattr(lm, "engine", None)
            if hasattr(engine, "local_model"):
                engine.local_model.load()  # weights now, not on the first click
            for callback in self._on_ready:
                callback(lm)
            self._lm = lm
        except Exception as exc:  # shown in the status line; every model action reports it
            self._error = exc
        finally:
            self._ready.set()

    @property
    def is_ready(self) -> bool:
        """True once loading has ended, whether it worked or not."""
        return self._ready.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for loading to end; True if it has."""
        self.start()
        return self._ready.wait(timeout)

    def get(self, timeout: float | None = None) -> dspy.BaseLM:
        """The LM, waiting for the load; raises ModelLoadFailed if loading failed, TimeoutError if still loading."""
        if not self.wait(timeout):
            raise TimeoutError("the model is still loading")
        if self._error is not None:
            raise ModelLoadFailed(f"The model failed to load ({self._error}). {SWITCH_HINT}")
        return self._lm

    def loading_text(self) -> str:
        """What the page says while the model loads: how long it has taken so far."""
        elapsed = 0 if self._started_at is None else time.monotonic() - self._started_at
        return (f"Loading the model… {elapsed:.0f} s so far (the first start on a new machine prepares the "
                f"weights once). You can label meanwhile; model actions start by themselves when it is ready.")

    def status(self) -> str:
        if not self._ready.is_set():
            return self.loading_text()
        if self._error is not None:
            return f"The model failed to load ({self._error}). {SWITCH_HINT}"
        info = describe(self._lm)
        where = info.device.upper() if info.device in ("cpu", "cuda", "mps") else info.device
        if info.is_packaged_demo:
            return (f"● Gemma 3 270M base, {where} — offline demo model; personas will be weak. {SWITCH_HINT}")
        return f"● {info.name}, {where}. Switch with SYNTH_MODEL (see README)."
