"""Click through the studio in headless Debian Chromium: label with mouse and keyboard, run a quick fit, see the
persona card, and check that markup inside pairs is shown as text and never runs. Screenshot: test-output/."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from components import studio
from tests.scripted import scripted_lm
from tests.test_app_client import free_port

pytestmark = pytest.mark.browser
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
XSS_PROMPT = 'Is this safe? <script>window.__xss = "script"</script>'
XSS_REPLY = 'Short. <img src=x onerror="window.__xss = \'onerror\'">'


@pytest.fixture
def app_url(tmp_path, monkeypatch):
    assert Path(CHROMIUM).exists(), "Debian chromium is missing: bash scripts/setup.sh --test installs it"
    monkeypatch.setenv("SYNTH_DATA_DIR", str(tmp_path / "data"))
    demo, model = studio.build_app(lm_factory=lambda: scripted_lm()[0])
    model.start()
    port = free_port()
    studio.launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_label_run_and_markup_stays_text(app_url, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text(json.dumps({"context": [{"role": "user", "content": XSS_PROMPT}],
                                   "chosen": {"role": "assistant", "content": XSS_REPLY},
                                   "rejected": {"role": "assistant", "content": "A long and winding reply."}}) + "\n")
    OUTPUT.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # Each step is a round trip through Gradio's queue; on 2 busy cores that can take far more than 5 s.
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)
        page.goto(app_url)
        progress = page.locator("#label-progress")
        expect(progress).to_contain_text("0 labeled, at least 5 needed, up to 15 useful", timeout=30_000)
        expect(page.locator("#model-status")).to_contain_text("local/scripted", timeout=30_000)

        first_prompt = page.locator("#pair-prompt").inner_text()
        page.locator("#btn-left").click()
        expect(progress).to_contain_text("1 labeled")
        page.locator("#btn-right").click()
        expect(progress).to_contain_text("2 labeled")
        page.locator("#btn-undo").click()
        expect(progress).to_contain_text("1 labeled")
        page.locator("body").click(position={"x": 5, "y": 5})  # keyboard focus on the page, not a field
        page.keyboard.press("ArrowRight")
        expect(progress).to_contain_text("2 labeled")
        # A key pressed while the previous labeling event is still pending can be dropped (seen on a busy machine:
        # ← and → at once gave 3 labeled, not 4), which also keeps a pair nobody has seen yet from being labeled.
        # So each key waits for the visible effect of the one before, as a person reading the next pair would.
        shown = page.locator("#pair-prompt").inner_text()
        page.keyboard.press("s")
        expect(page.locator("#pair-prompt")).not_to_have_text(shown)  # skipped: a new pair, same count
        expect(progress).to_contain_text("2 labeled")
        page.keyboard.press("ArrowLeft")
        expect(progress).to_contain_text("3 labeled")
        page.keyboard.press("u")
        expect(progress).to_contain_text("2 labeled")
        page.keyboard.press("ArrowLeft")
        expect(progress).to_contain_text("3 labeled")
        page.keyboard.press("ArrowRight")
        expect(progress).to_contain_text("4 labeled")
        assert page.locator("#pair-prompt").inner_text() != first_prompt

        page.get_by_text("Import or export labels").click()
        with page.expect_file_chooser() as chooser:
            page.locator("#btn-import").click()
        chooser.value.set_files(str(hostile))
        expect(page.locator("#import-msg")).to_contain_text("Imported 1 pair(s)", timeout=30_000)
        expect(progress).to_contain_text("5 labeled")
        page.get_by_text("Your labels", exact=True).click()
        labels = page.locator("#labels-list")
        expect(labels).to_contain_text(XSS_PROMPT)
        expect(labels).to_contain_text(XSS_REPLY)

        page.locator("#btn-start").click()
        expect(page.locator("#run-progress")).to_contain_text("Finished", timeout=120_000)
        expect(page.locator("#persona-card")).to_contain_text("The user prefers short replies.")
        expect(page.locator("#run-log")).to_contain_text("Persona written")
        assert page.locator("#labels-list script").count() == 0
        assert page.locator("#labels-list img").count() == 0
        assert page.evaluate("window.__xss") is None
        page.locator("#run-progress").scroll_into_view_if_needed()
        page.screenshot(path=str(OUTPUT / "try_tab.png"), full_page=True)
        browser.close()
