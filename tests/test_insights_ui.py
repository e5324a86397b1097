"""Browser test of the "Population insights" tab in headless Debian Chromium (Playwright): markup in personas and
evidence is shown as text. Topic embeddings (tests/insights_doubles.py) stand in for MiniLM: the embedder is not
the point here (the newcomer test runs the real one). Screenshot: test-output/."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
MARKUP = "The user pastes <script>alert(1)</script> and <img src=x onerror=alert(2)> into every chat."


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.browser
def test_tab_lists_opens_and_places_with_markup_shown_as_text(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists(), (
        "Debian chromium is missing: bash scripts/setup.sh --test installs it"
    )
    import gradio as gr
    from playwright.sync_api import sync_playwright

    from components.insights_tab import build_insights_tab
    from synth.insights.personas import write_personas_jsonl
    from synth.insights.population import SharedPopulation
    from synth.store import Evidence, PersonaRecord, PersonaStore
    from tests.insights_doubles import topic_personas, topic_pipeline

    sample = tmp_path / "sample.jsonl"
    write_personas_jsonl(topic_personas(), sample)
    store = PersonaStore(tmp_path / "personas.sqlite")
    evidence = Evidence(("<b>not bold</b>",), ({"prompt": "<i>Q</i>?", "chosen": "a", "rejected": "b"},))
    store.add_many(
        PersonaRecord(f"u-markup-{i}", MARKUP, "demo", consent=True, evidence=evidence)
        for i in range(6)
    )
    store.add(
        PersonaRecord("u-private", "The user loves chess.", "demo", consent=False)
    )

    with gr.Blocks() as demo:
        mine = gr.State(
            {
                "persona": "She bakes sourdough bread. She <b>guards</b> her privacy online."
            }
        )
        with gr.Tab("Population insights"):
            build_insights_tab(
                SharedPopulation(store, sample, lambda: topic_pipeline(n_resamples=0)),
                persona_state=mine,
            )
    port = _free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True
    )
    dialogs: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1300, "height": 2400})
            page.on(
                "dialog",
                lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()),
            )
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_text("insights in", exact=False).wait_for(timeout=180_000)
            status = (
                page.get_by_text("insights in", exact=False)
                .filter(visible=True)
                .first.inner_text()
            )
            assert "29 personas" in status, (
                status
            )  # 23 sample + 6 consented, not the 7th

            page.get_by_label("Search insights").fill("alert")
            page.wait_for_timeout(1500)
            page.get_by_text(re.compile(r"^insight-\d+$")).filter(
                visible=True
            ).first.click()
            page.get_by_text("Member statements", exact=False).wait_for()
            page.get_by_text(MARKUP).filter(visible=True).first.wait_for(
                timeout=30_000
            )  # the statement, literally

            page.get_by_role("button", name="Use my persona").click()
            page.wait_for_timeout(1000)
            page.get_by_role("button", name="Place me on the map").click()
            page.get_by_text("more typical than", exact=False).wait_for(timeout=60_000)
            page.get_by_text("She <b>guards</b> her privacy online.").filter(
                visible=True
            ).first.wait_for()
            OUTPUT.mkdir(exist_ok=True)
            page.screenshot(path=str(OUTPUT / "insights_tab.png"), full_page=True)

            assert page.locator("img[src='x']").count() == 0
            assert page.locator("b", has_text="guards").count() == 0
            assert dialogs == []
            browser.close()
    finally:
        demo.close()
    assert (OUTPUT / "insights_tab.png").stat().st_size > 10_000
