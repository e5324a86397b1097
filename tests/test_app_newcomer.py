"""A whole newcomer session in Debian's Chromium against the real studio (``python app.py``: the packaged offline
model, real MiniLM embeddings for the insights): label, Start at once, persona card, "is this you?", test the judge,
opt in, the insights tab (map, search, drill-down, "where do I fall"), reload the artifact. Fails on any Gradio error
badge and on a traceback in the server's log. The one test on the real model in the browser; screenshots in
test-output/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.studio_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    assert_no_error_badge,
    label_and_start,
    open_first_pair,
    start_studio,
    wait_for_persona,
)

pytestmark = [pytest.mark.slow, pytest.mark.browser]
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
FIT_TIMEOUT_S = 1800  # a quick fit on 2 busy cores, the model's first load included


def test_a_newcomers_session_runs_without_an_error(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    assert Path(CHROMIUM).exists(), "Debian chromium is missing: bash scripts/setup.sh --test installs it"
    OUTPUT.mkdir(exist_ok=True)
    studio = start_studio(tmp_path / "data", tmp_path / "app.log")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(120_000)
            expect.set_options(timeout=120_000)
            open_first_pair(page, studio)

            label_and_start(page, 5)  # Start at once: the model may still be loading, the run waits for it
            wait_for_persona(page, FIT_TIMEOUT_S)
            expect(page.locator("#run-progress")).to_contain_text("Finished")
            assert_no_error_badge(page)

            rating = page.locator("#rate-0")
            if rating.is_visible():  # a weak model may write a persona with no full sentence to rate
                rating.get_by_text("that's me").click()
                expect(page.locator("#fidelity-line")).to_contain_text("fidelity")

            page.get_by_text("Test your judge").click()
            page.locator("#test-pick input").click()
            page.get_by_role("option").first.click()
            expect(page.locator("#test-prompt textarea")).not_to_have_value("")
            page.locator("#btn-test").click()
            expect(page.locator("#test-out")).to_contain_text("Default judge", timeout=600_000)

            page.locator("#opt-in input").check()
            expect(page.locator("#opt-in-msg")).to_contain_text(re.compile("joined the population|wrote no persona"))
            assert_no_error_badge(page)
            page.screenshot(path=str(OUTPUT / "newcomer_try_tab.png"), full_page=True)

            artifact = tmp_path / "artifact.json"
            artifact.write_bytes(page.request.get(page.locator("#artifact-file a").first.get_attribute("href")).body())
            with page.expect_file_chooser() as chooser:
                page.locator("#btn-reload").click()
            chooser.value.set_files(str(artifact))
            expect(page.locator("#reload-msg")).to_contain_text("Reloaded")

            page.get_by_role("tab", name="Population insights").click()
            status = page.locator("#population-status")
            expect(status).to_contain_text("insights in", timeout=600_000)
            expect(page.locator("#population-map .js-plotly-plot")).to_have_count(1)
            page.locator("#insight-search textarea, #insight-search input").fill("the")
            page.locator("#ranked-insights").get_by_text(re.compile(r"^insight-\d+$")).filter(
                visible=True).first.click()
            expect(page.locator("#member-statements")).to_contain_text(re.compile(r"\w"))
            page.locator("#member-picker input").click()
            page.get_by_role("option").first.click()
            expect(page.locator("#member-shared")).to_contain_text(re.compile("sample|shared|removed"))
            page.locator("#btn-use-mine").click()
            expect(page.locator("#my-persona textarea")).not_to_have_value("")
            page.locator("#btn-place").click()
            expect(page.locator("#placement-summary")).to_contain_text(re.compile("more typical than|Nothing to place"))
            assert_no_error_badge(page)
            page.screenshot(path=str(OUTPUT / "newcomer_insights_tab.png"), full_page=True)
            browser.close()
    finally:
        studio.stop()
    assert "Traceback" not in studio.log_text(), studio.log_text()[-6000:]
