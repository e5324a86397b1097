"""A newcomer's first minutes, timed: ``python app.py`` (the README's first command after setup) until the page shows
its first pair, then five labels and Start at once until the persona card appears (Quick settings, the packaged
offline model unless $SYNTH_MODEL says otherwise), in Debian's Chromium.

    .venv/bin/python benchmarks/newcomer.py --runs 2

Prints one row per run, the CPU, and the load average before and after (other work on the machine slows both
figures; say what else was running when quoting them).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from synth.lm.loading import isa_limits
from tests.studio_browser import (  # the checkout root is on the path first, as for the tests
    CHROMIUM,
    CHROMIUM_ARGS,
    label_and_start,
    open_first_pair,
    start_studio,
    wait_for_persona,
)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def one_run(labels: int, fit_timeout_s: float) -> tuple[float, float]:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="synth-newcomer-") as folder:
        studio = start_studio(Path(folder) / "data", Path(folder) / "app.log")
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page()
                page.set_default_timeout(fit_timeout_s * 1000)
                to_page = open_first_pair(page, studio)
                page_shown = time.perf_counter()
                label_and_start(page, labels)
                wait_for_persona(page, fit_timeout_s)
                to_persona = time.perf_counter() - page_shown
                browser.close()
        finally:
            studio.stop()
    return to_page, to_persona


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--labels", type=int, default=5)
    parser.add_argument("--fit-timeout", type=float, default=1800, help="seconds to wait for the persona")
    args = parser.parse_args()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores), kernel limits: {isa_limits() or 'none'} · model: "
          f"{os.environ.get('SYNTH_MODEL') or 'offline'}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| run | command → first pair (s) | page → first persona, quick fit of "
          f"{args.labels} labels (s) |\n|---|---|---|")
    for run in range(1, args.runs + 1):
        to_page, to_persona = one_run(args.labels, args.fit_timeout)
        print(f"| {run} | {to_page:.1f} | {to_persona:.1f} |", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
