"""Run a whole job on a Hugging Face ZeroGPU slot when the app is on Spaces; a no-op everywhere else.

ZeroGPU attaches a GPU only inside functions decorated with ``spaces.GPU``; a fit makes hundreds of LM calls,
so the fit as a whole (not each call) must run inside one decorated function.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import TypeVar

Fn = TypeVar("Fn", bound=Callable)

DEFAULT_GPU_SECONDS = 120


def gpu_task(fn: Fn | None = None, *, duration: int = DEFAULT_GPU_SECONDS):
    """Decorate ``fn`` with ``spaces.GPU(duration=...)`` when ``spaces`` is importable, else return it as is.

    Usable bare (``@gpu_task``) or with arguments (``@gpu_task(duration=300)``).
    """

    def wrap(function: Fn) -> Fn:
        if importlib.util.find_spec("spaces") is None:
            return function
        import spaces

        return spaces.GPU(duration=duration)(function)

    return wrap(fn) if fn is not None else wrap
