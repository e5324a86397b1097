"""Several visitors' quick fits at once, through the studio's own code path, against running them one after another.

Each visitor is a ``LabelSession`` that labels its first ``--labels`` bank pairs (its own shuffled order, seeded by
its number) and presses Start: ``components.try_handlers.run_fit`` with the app's real parts (a ``ModelHandle`` on
the offline model, the model gate sized to N, the device tasks), exactly what a click runs. The time to persona is
when the persona appears in the visitor's live view (``PersonaReady``); the time to the card is when the fit is
done and the persona card is shown. First every visitor fits alone, one after another (the sequential reference);
then N at once, for each N. The engine's prefix store is emptied before each run, so visitors share computed
prompt prefixes only within a run, as visitors arriving together would.

    PYTHONPATH=. .venv/bin/python benchmarks/visitors.py [--visitors 1 2 4] [--labels 5] [--dtype auto|float32]
        [--quantize none|int8|auto]

The model loads once, timed from the moment the app would serve the page (its background load starts then). The
last line starts with ``ratio``: the wall time of N at once over the sum of the same visitors' times alone.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from components import try_handlers
from components.labeling import LabelSession, load_bank
from components.limits import Limits, ModelGate
from components.model_handle import ModelHandle
from components.studio import device_tasks, without_response_cache
from components.visitors import Visitors
from synth.events import PersonaReady
from synth.lm import APP_QUANTIZE, default_fit_concurrency, describe, packaged_model_path
from synth.lm.config import EngineConfig
from synth.lm.engine import LocalEngine
from synth.lm.loading import QUANTIZATIONS, QUANTIZE_HELP, LocalModel


@dataclass
class VisitorRun:
    visitor: int
    persona_s: float | None = None  # from Start to the persona in the live view
    card_s: float | None = None  # from Start to the finished fit's persona card
    error: str | None = None


def labelled_session(bank, visitor: int, labels: int) -> LabelSession:
    """Visitor ``visitor``'s session with its first ``labels`` pairs labelled (alternating sides)."""
    session = LabelSession.new(bank, seed=visitor, client=f"benchmark-visitor-{visitor}")
    for index in range(labels):
        session.choose("left" if index % 2 else "right")
    return session


def watched(parts: try_handlers.TryParts, seen: dict[str, float]) -> try_handlers.TryParts:
    """The parts with the fit task wrapped to note when each visitor's persona arrives (events pass unchanged)."""
    fit = parts.device.fit

    def noting_fit(visitor, rows, quick):
        for item in fit(visitor, rows, quick):
            if isinstance(item, PersonaReady):
                seen.setdefault(visitor, time.perf_counter())
            yield item

    return replace(parts, device=replace(parts.device, fit=noting_fit))


def run_visitors(parts: try_handlers.TryParts, bank, visitors: list[int], labels: int) -> tuple[float, list]:
    """The given visitors press Start together; returns the wall time and each one's run."""
    sessions = [labelled_session(bank, visitor, labels) for visitor in visitors]
    for session in sessions:
        parts.visitors.join(session, None)
    parts.model.get().engine.runner.prefix_store.clear()  # no run reuses what an earlier run computed
    persona_at: dict[str, float] = {}
    parts = watched(parts, persona_at)
    runs = [VisitorRun(visitor) for visitor in visitors]
    started = time.perf_counter()

    def press_start(run: VisitorRun, session: LabelSession) -> None:
        try:
            for _ in try_handlers.run_fit(parts, session, "Quick", False, False):
                pass
        except Exception as error:  # reported in the table
            run.error = f"{type(error).__name__}: {error}"
        if session.fitted is None and run.error is None:
            run.error = "no fit (see the run view)"
        run.card_s = time.perf_counter() - started
        if session.id in persona_at:
            run.persona_s = persona_at[session.id] - started

    threads = [threading.Thread(target=press_start, args=pair) for pair in zip(runs, sessions, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, runs


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--labels", type=int, default=5)
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where native), bfloat16 or float32")
    parser.add_argument("--quantize", default=APP_QUANTIZE, choices=QUANTIZATIONS,
                        help=f"{QUANTIZE_HELP} (default: the app's, {APP_QUANTIZE})")
    args = parser.parse_args()

    page_at = time.perf_counter()  # the app serves its page as the model starts loading in the background
    model = ModelHandle(lambda: without_response_cache(LocalEngine(
        LocalModel(packaged_model_path(), dtype=args.dtype, quantize=args.quantize),
        EngineConfig.from_env()).as_lm())).start()
    lm = model.get()
    loaded = time.perf_counter() - page_at
    info, local = describe(lm), lm.engine.local_model
    most = max(args.visitors)
    with tempfile.TemporaryDirectory(prefix="synth-visitors-") as folder:
        visitors = Visitors(Path(folder))
        bank = load_bank()
        parts = try_handlers.TryParts(
            model=model, gate=ModelGate(capacity=1, per_client=2, max_line=64), visitors=visitors,
            limits=Limits(), bank=bank, device=device_tasks(model, visitors, gpu_seconds=600))
        print(f"{info.name} on {info.device} in {local.precision}; model ready {loaded:.1f} s after "
              f"the page; default fit concurrency here: {default_fit_concurrency(lm)}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"quick fits on {args.labels} labels each, through components.try_handlers.run_fit")
        alone = {}
        for visitor in range(most):
            parts.gate.set_capacity(1)
            _, [run] = run_visitors(parts, bank, [visitor], args.labels)
            alone[visitor] = run
            print(f"  visitor {visitor} alone: persona {seconds(run.persona_s)} s, card {seconds(run.card_s)} s"
                  + (f", FAILED {run.error}" if run.error else ""), flush=True)
        rows = []
        for count in args.visitors:
            parts.gate.set_capacity(count)
            if count == 1:
                wall, runs = alone[0].card_s, [alone[0]]
            else:
                wall, runs = run_visitors(parts, bank, list(range(count)), args.labels)
            sequential = sum(alone[run.visitor].card_s for run in runs)
            rows.append((count, wall, runs, sequential))
            failed = [run for run in runs if run.error]
            print(f"  {count} at once: {wall:.1f} s" + (f", {len(failed)} FAILED: {failed[0].error}" if failed
                                                          else ""), flush=True)
        print(f"\n{'visitors':>8}{'wall s':>9}{'one after another s':>21}{'persona s (each)':>28}"
              f"{'card s (each)':>28}")
        for count, wall, runs, sequential in rows:
            personas = " ".join(seconds(run.persona_s) for run in runs)
            cards = " ".join(seconds(run.card_s) for run in runs)
            print(f"{count:>8}{wall:>9.1f}{sequential:>21.1f}{personas:>28}{cards:>28}")
        print(f"load average now {os.getloadavg()[0]:.1f}")
        print("ratio (wall time of N at once / the same visitors one after another): " + ", ".join(
            f"N={count}: {wall / sequential:.2f}" for count, wall, _, sequential in rows))
        visitors.close()


if __name__ == "__main__":
    main()
