"""Driving the studio in Debian's Chromium: the browser's flags, the error-badge check, and a newcomer's first
minutes against the real studio (``python app.py``, the README's first command after setup, in a subprocess).
Shared by the browser tests and benchmarks/newcomer.py."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@dataclass
class Studio:
    process: subprocess.Popen
    url: str
    log: Path
    started: float  # time.perf_counter() when the command was run

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_studio(data_dir: Path, log: Path, timeout_s: float = 600) -> Studio:
    """Run ``python app.py`` from the checkout with its store under ``data_dir`` and wait until the page answers."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "SYNTH_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    studio = Studio(process, f"http://127.0.0.1:{port}/", log, started)
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited ({process.returncode}) before serving:\n{studio.log_text()[-4000:]}")
        try:
            with urllib.request.urlopen(studio.url, timeout=5) as response:
                if response.status == 200:
                    return studio
        except OSError:
            time.sleep(0.5)
    studio.stop()
    raise TimeoutError(f"app.py served no page within {timeout_s:.0f} s:\n{studio.log_text()[-4000:]}")


def open_first_pair(page, studio: Studio) -> float:
    """Open the page and wait for the first pair; seconds from the command to the pair on screen."""
    page.goto(studio.url)
    page.locator("#pair-prompt .prompt-card").wait_for()
    return time.perf_counter() - studio.started


def label_and_start(page, n: int = 5) -> None:
    """Label ``n`` pairs (left, right, ...) and press Start at once, as a newcomer would, model loaded or not."""
    for i in range(n):
        button = page.locator("#btn-right" if i % 2 else "#btn-left")
        button.click()
        page.locator("#label-progress").get_by_text(re.compile(rf"^{i + 1} labeled")).wait_for()
    page.locator("#btn-start").click()


def wait_for_persona(page, timeout_s: float) -> None:
    """The persona card, or fail at once when the model could not load (instead of waiting out the timeout)."""
    card = page.locator("#persona-card")
    card.or_(page.get_by_text("The model failed to load")).first.wait_for(timeout=timeout_s * 1000)
    assert card.is_visible(), page.locator("body").inner_text()[:2000]


def assert_no_error_badge(page) -> None:
    """Gradio marks a failed event with a red "Error" badge on its outputs and an error toast."""
    badges = page.get_by_text("Error", exact=True).filter(visible=True)
    assert badges.count() == 0, page.locator("body").inner_text()[:2000]
    assert page.locator(".toast-body.error").count() == 0
