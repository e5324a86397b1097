"""Click through the studio in headless Debian Chromium (Playwright) against one shared app on a scripted LM: fast
clicks while the model loads, a run, markup shown as text, "is this you?", "what your persona changes", and two
visitors at once. Every test fails on a Gradio error badge or a traceback in the server log. Screenshots in
test-output/."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from components import studio
from synth.insights.personas import write_personas_jsonl
from synth.insights.population import SharedPopulation
from synth.insights.types import Persona
from synth.store import PersonaStore
from tests.insights_doubles import topic_personas, topic_pipeline
from tests.scripted import PERSONA, scripted_lm
from tests.studio_browser import CHROMIUM, CHROMIUM_ARGS, assert_no_error_badge, free_port

pytestmark = pytest.mark.browser
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"
XSS_PROMPT = 'Is this safe? <script>window.__xss = "script"</script>'
XSS_REPLY = 'Short. <img src=x onerror="window.__xss = \'onerror\'">'
APOSTROPHE = "She doesn't like long replies"
TIMEOUT_MS = 60_000  # each step is a round trip through Gradio's queue; on 2 busy cores that can take a while


class App:
    """The shared server; its model loads only when ``release`` is called (so a test can click while it loads)."""

    def __init__(self, tmp: Path):
        self.loaded = threading.Event()
        self.data = tmp / "data"
        sample = tmp / "sample.jsonl"
        write_personas_jsonl([*topic_personas(), *(Persona(f"brief-{i}", f"{APOSTROPHE}, case {i}.")
                                                   for i in range(6))], sample)
        settings = studio.StudioSettings(store_path=self.data / "personas.sqlite")
        population = SharedPopulation(PersonaStore(settings.store_path), sample, lambda: topic_pipeline(n_resamples=0))
        self.demo, self.model = studio.build_app(lm_factory=self._load, settings=settings, population=population)
        self.model.start()
        port = free_port()
        studio.launch(self.demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        self.url = f"http://127.0.0.1:{port}/"

    def _load(self):
        self.loaded.wait(600)
        return scripted_lm()[0]

    def release(self) -> None:
        self.loaded.set()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    assert Path(CHROMIUM).exists(), "Debian chromium is missing: bash scripts/setup.sh --test installs it"
    served = App(tmp_path_factory.mktemp("studio"))
    yield served
    served.release()
    served.demo.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def open_page(browser, app: App):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(app.url)
    page.locator("#label-progress").get_by_text("labeled").wait_for()
    return page


@pytest.fixture
def server_log(capfd):
    """Fails the test when the server printed a traceback meanwhile."""
    yield
    _, err = capfd.readouterr()
    assert "Traceback" not in err, err[-4000:]


def words(text: str) -> str:
    return " ".join(text.split())


def label_n(page, n: int) -> None:
    progress = page.locator("#label-progress")
    for i in range(n):
        page.locator("#btn-left" if i % 2 else "#btn-right").click()
    progress.get_by_text(re.compile(rf"^{n} labeled")).wait_for()


def test_fast_clicks_while_the_model_loads_each_count_once_for_the_pair_shown(app, browser, server_log):
    """Issue 15: 10 clicks gave 6 labels while the model loaded. Now every click counts once and labels the pair
    that was on screen when it was made."""
    from playwright.sync_api import expect

    page = open_page(browser, app)
    expect(page.locator("#model-status")).to_contain_text("Loading the model")
    shown = []
    for i in range(8):
        side = "left" if i % 2 else "right"
        button = page.locator(f"#btn-{side}")
        expect(button).to_be_enabled()
        shown.append((page.locator("#pair-prompt .prompt-text").inner_text(),
                       page.locator(f"#reply-{side} .text-block").inner_text()))
        button.click()  # as fast as Playwright can: it waits only until the button takes clicks again
    expect(page.locator("#label-progress")).to_contain_text("8 labeled")
    page.get_by_text("Your labels", exact=True).click()
    labels = page.locator("#labels-list li")
    expect(labels).to_have_count(8)
    for index, (prompt, preferred) in enumerate(shown):
        item = labels.nth(index)
        assert words(item.locator(".label-prompt").inner_text()) == words(prompt[:120])
        assert words(item.locator(".label-chosen").inner_text()) == words(f"preferred: {preferred[:160]}")
    assert_no_error_badge(page)
    app.release()
    expect(page.locator("#model-status")).to_contain_text("local/scripted")
    page.close()


def test_label_run_markup_rating_and_what_the_persona_changes(app, browser, tmp_path, server_log):
    from playwright.sync_api import expect

    app.release()
    hostile = tmp_path / "hostile.jsonl"
    hostile.write_text(json.dumps({"context": [{"role": "user", "content": XSS_PROMPT}],
                                   "chosen": {"role": "assistant", "content": XSS_REPLY},
                                   "rejected": {"role": "assistant", "content": "A long and winding reply."}}) + "\n")
    OUTPUT.mkdir(exist_ok=True)
    page = open_page(browser, app)
    progress = page.locator("#label-progress")
    first_prompt = page.locator("#pair-prompt .prompt-card").inner_text()
    label_n(page, 2)
    page.locator("#btn-undo").click()
    expect(progress).to_contain_text("1 labeled")
    page.locator("body").click(position={"x": 5, "y": 5})  # keyboard focus on the page, not a field

    def press(key: str) -> None:
        """A key, once the buttons take input again (a key pressed while the pair is being replaced would answer a
        pair that is no longer on screen, so it is ignored, as a click on a disabled button is)."""
        expect(page.locator("#btn-left")).to_be_enabled()
        page.keyboard.press(key)

    press("ArrowRight")
    expect(progress).to_contain_text("2 labeled")
    shown = page.locator("#pair-prompt .prompt-card").inner_text()
    press("s")
    expect(page.locator("#pair-prompt .prompt-card")).not_to_have_text(shown)  # skipped: a new pair, same count
    expect(progress).to_contain_text("2 labeled")
    press("ArrowLeft")
    expect(progress).to_contain_text("3 labeled")
    press("ArrowLeft")
    expect(progress).to_contain_text("4 labeled")
    assert page.locator("#pair-prompt .prompt-card").inner_text() != first_prompt

    page.get_by_text("Import or export labels").click()
    with page.expect_file_chooser() as chooser:
        page.locator("#btn-import").click()
    chooser.value.set_files(str(hostile))
    expect(page.locator("#import-msg")).to_contain_text("Imported 1 pair(s)")
    expect(progress).to_contain_text("5 labeled")
    page.get_by_text("Your labels", exact=True).click()
    labels = page.locator("#labels-list")
    expect(labels).to_contain_text(XSS_PROMPT)
    expect(labels).to_contain_text(XSS_REPLY)

    page.locator("#btn-start").click()
    expect(page.locator("#run-progress")).to_contain_text("Finished")
    expect(page.locator("#persona-card")).to_contain_text(PERSONA)
    expect(page.locator("#run-log")).to_contain_text("Persona written")
    assert page.locator("#labels-list script").count() == 0
    assert page.locator("#labels-list img").count() == 0
    assert page.evaluate("window.__xss") is None

    # Is this you? One statement, answered "that's me": fidelity 100%.
    rating = page.locator("#rate-0")
    expect(rating).to_contain_text(PERSONA)
    rating.get_by_text("that's me").click()
    expect(page.locator("#fidelity-line")).to_contain_text("100% fidelity")

    # What your persona changes: two unlabelled answers, a choice, the reveal, and the choice as a new label.
    page.get_by_text("What your persona changes").click()
    page.locator("#answer-prompt textarea").fill("Plan a weekend in Lisbon for me.")
    page.locator("#btn-answer").click()
    expect(page.locator("#answer-msg")).to_contain_text("Which answer do you prefer?")
    assert "persona" not in page.locator("#answer-1 .reply-tag").inner_text().lower()
    page.locator("#btn-prefer-1").click()
    expect(page.locator("#answer-msg")).to_contain_text("You preferred answer 1")
    expect(page.locator("#answer-1 .reply-tag")).to_contain_text(re.compile("with your persona|no system prompt"))
    page.locator("#btn-add-choice").click()
    expect(page.locator("#answer-msg")).to_contain_text("you now have 6 labels")
    expect(progress).to_contain_text("6 labeled")
    assert_no_error_badge(page)
    page.locator("#run-progress").scroll_into_view_if_needed()
    page.screenshot(path=str(OUTPUT / "try_tab.png"), full_page=True)
    page.close()


def test_two_visitors_at_once_one_contributes_the_other_sees_the_persona_only(app, browser, server_log):
    from playwright.sync_api import expect

    app.release()
    contributor, other = open_page(browser, app), open_page(browser, app)
    label_n(contributor, 5)
    contributor.get_by_text("Your labels", exact=True).click()
    private_prompt = contributor.locator("#labels-list .label-prompt").first.inner_text()
    contributor.locator("#opt-in input").check()
    contributor.locator("#btn-start").click()
    expect(contributor.locator("#opt-in-msg")).to_contain_text("joined the population anonymously")
    user_id = contributor.locator("#opt-in-msg b").inner_text()
    code = contributor.locator("#opt-in-msg .deletion-code").inner_text()
    expect(contributor.locator("#deletion-code input, #deletion-code textarea")).to_have_value(code)
    expect(other.locator("#label-progress")).to_contain_text("0 labeled")  # never the other visitor's labels

    other.get_by_role("tab", name="Population insights").click()
    status = other.locator("#population-status")
    for _ in range(60):  # the newer population is analysed in the background; the page says "refresh in a moment"
        other.locator("#btn-refresh").click()
        other.wait_for_timeout(1000)
        if "1 from people who opted in" in status.inner_text() and "refresh in a moment" not in status.inner_text():
            break
    expect(status).to_contain_text("1 from people who opted in")
    other.locator("#insight-search textarea, #insight-search input").fill("short replies")
    other.locator("#ranked-insights").get_by_text(re.compile(r"^insight-\d+$")).filter(visible=True).first.click()
    members = other.locator("#member-statements")
    expect(members).to_contain_text(user_id)
    expect(other.locator("#insight-view")).to_contain_text(APOSTROPHE.split()[1])  # an apostrophe, not &#x27;
    assert "&#x27;" not in other.locator("#insight-view").inner_text()
    picker = other.locator("#member-picker input")
    picker.click()
    other.get_by_role("option").filter(has_text=user_id).first.click()
    expect(other.locator("#member-persona textarea")).to_have_value(PERSONA)
    expect(other.locator("#member-shared")).to_contain_text("shared the persona and its statements only")
    page_text = other.locator("body").inner_text()
    assert private_prompt not in page_text  # nothing of the contributor's labels
    assert_no_error_badge(other)
    other.screenshot(path=str(OUTPUT / "insights_tab.png"), full_page=True)

    contributor.locator("#btn-remove").click()
    expect(contributor.locator("#remove-msg")).to_contain_text("was removed")
    assert_no_error_badge(contributor)
    contributor.close()
    other.close()
