"""components.insights_tab: each handler called directly on a small population (topic embeddings, no browser)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from components import insights_tab as tab
from synth.insights.personas import write_personas_jsonl
from synth.insights.population import FitCache, SharedPopulation
from synth.store import PersonaRecord, PersonaStore
from tests.insights_doubles import topic_personas, topic_pipeline

MARKUP = "The user pastes <b>bold</b> [links](x) into every chat about privacy."


@pytest.fixture
def population(tmp_path: Path) -> SharedPopulation:
    sample = tmp_path / "sample.jsonl"
    write_personas_jsonl(topic_personas(), sample)
    store = PersonaStore(tmp_path / "personas.sqlite")
    store.add(PersonaRecord("u-app", MARKUP, "demo", consent=True, artifact={"traces": ["why"], "demos": ["pair"]}))
    store.add(PersonaRecord("u-private", "The user loves to cook in secret.", "demo", consent=False))
    return SharedPopulation(store, sample, FitCache(lambda: topic_pipeline(n_resamples=0)))


def test_show_population_lists_insights_and_counts_sources(population: SharedPopulation) -> None:
    status, figure, ranked, themes, picker = tab.show_population(population, True, None)  # None: the page load
    assert status.startswith("**24 personas** (23 from the bundled synthetic sample, 1 from people who opted in)")
    assert "**1** such clusters are hidden" in status
    assert [row[1] for row in ranked] == [14, 7, 6] and ranked[0][0] == "insight-1"
    assert len(figure.data) >= 1 and themes == [
        ["(no theme)", row[1], "", "", row[0], row[3]] for row in ranked
    ]
    assert picker["choices"][0] == (f"14 users \u2014 {ranked[0][3]}", "insight-1") and picker["value"] is None
    status, *_ = tab.show_population(population, False, "")
    assert status.startswith("**1 personas** (0 from the bundled synthetic sample, 1 from people who opted in)")


def test_search_keeps_insights_matching_names_keywords_or_statements(population: SharedPopulation) -> None:
    rows = tab.filter_list(population, True, "  PASTES ")
    assert len(rows) == 1 and rows[0][1] == 7  # found by a member statement, not by the name
    assert tab.filter_list(population, True, "no such words") == []
    assert len(tab.filter_list(population, True, None)) == 3


def test_picking_a_row_opens_its_insight(population: SharedPopulation) -> None:
    event = gr.SelectData(None, {"index": [0, 3], "value": "name", "row_value": ["insight-2", 7, "29%"]})
    assert tab.pick_from_table(event) == "insight-2"
    assert tab.pick_from_table(gr.SelectData(None, {"index": [0, 0], "value": ""})) is None
    details, members, users, figure = tab.open_insight(population, True, "insight-2")
    name = population.current_fit(True).result.get("insight-2").name
    assert details.startswith(f"**{tab.escape_markdown(name)}**") and "7 users (29%)" in details
    assert [MARKUP, "u-app"] in members and len(members) == 7
    assert "u-app" in users["choices"] and figure is not None
    empty = tab.open_insight(population, True, None)
    assert empty[:2] == ("", []) and empty[2]["choices"] == []


def test_open_persona_shows_the_artifact_behind_an_app_persona(population: SharedPopulation) -> None:
    assert tab.open_persona(population, True, "u-app") == (MARKUP, ["why"], ["pair"])
    text, reasoning, pairs = tab.open_persona(population, True, "garden-1")
    assert "garden" in text and reasoning is None and pairs is None
    assert tab.open_persona(population, True, "u-private") == ("", None, None)  # not consented: not in the population
    assert tab.open_persona(population, True, None) == ("", None, None)


def test_place_puts_a_pasted_persona_on_the_map(population: SharedPopulation) -> None:
    figure, summary, rows = tab.place(population, True, "She loves to cook pasta number 3. She reads poetry at night.")
    assert "more typical than" in summary and "Nearest insights:" in summary and figure is not None
    assert rows[1] == ["She reads poetry at night.", tab.NO_INSIGHT, rows[1][2]]
    assert rows[0][1] != tab.NO_INSIGHT
    with pytest.raises(gr.Error, match="Paste a persona first"):
        tab.place(population, True, "  ")
    with pytest.raises(gr.Error, match="no trait statements"):
        tab.place(population, True, "Hi.")


def test_an_empty_population_is_a_readable_error(tmp_path: Path) -> None:
    empty = SharedPopulation(PersonaStore(tmp_path / "empty.sqlite"), None, FitCache(topic_pipeline))
    with pytest.raises(gr.Error, match="No personas yet"):
        tab.show_population(empty, True, "")


def test_persona_from_state_reads_a_string_an_artifact_or_a_session() -> None:
    class Session:
        persona = "From a session."

    assert tab.persona_from_state("Plain.") == "Plain."
    assert tab.persona_from_state({"persona": "From an artifact."}) == "From an artifact."
    assert tab.persona_from_state(Session()) == "From a session."
    assert tab.persona_from_state(None) == tab.persona_from_state({"persona": 3}) == ""


def test_markdown_escaping_shows_text_literally() -> None:
    assert tab.escape_markdown("<b>*x*</b>") == "&lt;b&gt;\\*x\\*&lt;/b&gt;"


def test_the_tab_wires_every_handler_under_its_name(tmp_path: Path) -> None:
    with gr.Blocks() as demo:
        state = gr.State({"persona": "x"})
        built = tab.build_insights_tab(PersonaStore(tmp_path / "s.sqlite"), topic_pipeline, None, persona_state=state)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"show_population", "filter_list", "pick_from_table", "open_insight", "open_persona", "place",
            "persona_from_state"} <= names
    assert isinstance(built.ranked_table, gr.Dataframe)
