"""components.insights_tab: each handler called directly on a small population (topic embeddings, no browser)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from components import insights_tab as tab
from components.limits import Limits, ModelGate
from synth.insights.personas import write_personas_jsonl
from synth.insights.population import SharedPopulation
from synth.store import Evidence, PersonaRecord, PersonaStore
from tests.insights_doubles import topic_personas, topic_pipeline

MARKUP = "The user pastes <b>bold</b> [links](x) into every chat about privacy."
EVIDENCE = Evidence(("The shorter reply respects their time.",),
                    ({"bank_id": "b1", "prompt": "Q?", "chosen": "Short.", "rejected": "Long."},))


@pytest.fixture
def population(tmp_path: Path) -> SharedPopulation:
    sample = tmp_path / "sample.jsonl"
    write_personas_jsonl(topic_personas(), sample)
    store = PersonaStore(tmp_path / "personas.sqlite")
    store.add(PersonaRecord("u-app", MARKUP, "demo", consent=True, evidence=EVIDENCE))
    store.add(PersonaRecord("u-plain", "He guards his privacy online, always.", "demo", consent=True))
    store.add(PersonaRecord("u-private", "The user loves to cook in secret.", "demo", consent=False))
    return SharedPopulation(store, sample, lambda: topic_pipeline(n_resamples=0))


def shown(population: SharedPopulation, include_sample: bool = True, query: str | None = None) -> tuple:
    """The last update of the page-load event (the first may say the population is being analysed)."""
    return list(tab.show_population(population, include_sample, query))[-1]


def test_show_population_lists_insights_and_counts_sources(population: SharedPopulation) -> None:
    key, status, figure, ranked, themes, picker = shown(population, True, None)  # None: the page load
    assert status.startswith("**25 personas** (23 from the bundled synthetic sample, 2 from people who opted in)")
    assert "such clusters are hidden" in status and "figures appear from 5 on" in status
    assert ranked[0][1] >= ranked[-1][1] and ranked[0][0].startswith("insight-")
    assert len(figure.data) >= 1 and themes == [["(no theme)", row[1], "", "", row[0], row[3]] for row in ranked]
    assert picker["choices"][0] == (f"{ranked[0][1]} users \u2014 {ranked[0][3]}", ranked[0][0])
    assert population.by_key(key).result.n_users == 25
    _, status, *_ = shown(population, False, "")
    assert status.startswith("**2 personas** (0 from the bundled synthetic sample, 2 from people who opted in)")


def test_search_filters_the_shown_view(population: SharedPopulation) -> None:
    key, *_ = shown(population)
    rows = tab.filter_list(population, key, "  PASTES ")
    assert len(rows) == 1  # found by a member statement, not by the name
    assert tab.filter_list(population, key, "no such words") == []
    assert len(tab.filter_list(population, key, None)) == len(tab.filter_list(population, key, ""))


def test_picking_a_row_opens_its_insight_from_the_shown_fit(population: SharedPopulation) -> None:
    key, *_ = shown(population)
    event = gr.SelectData(None, {"index": [0, 3], "value": "name", "row_value": ["insight-2", 7, "29%"]})
    assert tab.pick_from_table(event) == "insight-2"
    assert tab.pick_from_table(gr.SelectData(None, {"index": [0, 0], "value": ""})) is None
    fit = population.by_key(key)
    privacy = next(leaf for leaf in fit.result.leaves if "u-app" in leaf.user_ids)
    details, members, users, figure = tab.open_insight(population, key, privacy.id)
    assert details.startswith(f"**{tab.escape_markdown(privacy.name)}**")
    assert [MARKUP, "u-app"] in members and "u-app" in users["choices"] and figure is not None
    empty = tab.open_insight(population, key, None)
    assert empty[:2] == ("", []) and empty[2]["choices"] == []
    assert "No insight insight\\-99" in tab.open_insight(population, key, "insight-99")[0]


def test_a_view_keeps_its_insights_when_the_population_changes(population: SharedPopulation) -> None:
    key, *_ = shown(population)
    before = tab.open_insight(population, key, "insight-1")
    population.store.add(PersonaRecord("u-new", "She tends a garden of herbs and roses.", "demo", consent=True))
    while population.latest(True, timeout=0).key == key:
        population.latest(True, timeout=0.1)
    assert tab.open_insight(population, key, "insight-1")[:2] == before[:2]  # same fit, same meaning
    assert tab.STALE in tab.open_insight(population, "r404s", "insight-1")[0]


def test_the_evidence_chain_shows_exactly_what_was_shared(population: SharedPopulation) -> None:
    key, *_ = shown(population)
    text, note, reasoning, pairs = tab.open_persona(population, key, "u-app")
    assert text == MARKUP and "also shared the evidence" in note
    assert reasoning == list(EVIDENCE.reasoning) and pairs == list(EVIDENCE.pairs)
    assert tab.open_persona(population, key, "u-plain")[1:] == (
        "Its author shared the persona and its statements only.", None, None)
    text, note, reasoning, pairs = tab.open_persona(population, key, "garden-1")
    assert "garden" in text and "synthetic sample" in note and reasoning is None and pairs is None
    assert tab.open_persona(population, key, "u-private") == ("", "", None, None)  # never in the population
    population.store.delete("u-app")  # removed by its author: gone at once from the drill-down
    assert tab.open_persona(population, key, "u-app") == ("", "Its author removed this persona from the "
                                                              "population.", None, None)


GATE = ModelGate(capacity=1, per_client=1, max_line=1)


def test_place_puts_a_pasted_persona_on_the_map_within_the_limits(population: SharedPopulation) -> None:
    key, *_ = shown(population)
    figure, summary, rows = tab.place(population, GATE, Limits(), key, "She loves to cook pasta number 3. She reads "
                                                                 "poetry at night.")
    assert "more typical than" in summary and "Nearest insights:" in summary and figure is not None
    assert rows[1] == ["She reads poetry at night.", tab.NO_INSIGHT, rows[1][2]]
    assert "Paste a persona first" in tab.place(population, GATE, Limits(), key, "  ")[1]
    assert "no trait statements" in tab.place(population, GATE, Limits(), key, "Hi.")[1]
    many = " ".join(f"She likes to cook dish number {i}." for i in range(5))
    assert "splits into 5 statements" in tab.place(population, GATE, Limits(max_place_statements=4), key, many)[1]
    assert "takes at most 20" in tab.place(population, GATE, Limits(max_field_chars=20), key, many)[1]


def test_a_failing_placement_is_a_sentence(population: SharedPopulation, monkeypatch) -> None:
    key, *_ = shown(population)

    def broken(text):
        raise RuntimeError("embedder out of memory")

    monkeypatch.setattr(population.by_key(key).estimator, "place", broken)
    _, summary, rows = tab.place(population, GATE, Limits(), key, "She loves to cook pasta number 3.")
    assert "could not be placed (embedder out of memory)" in summary and rows == []


def test_an_empty_population_is_a_sentence(tmp_path: Path) -> None:
    empty = SharedPopulation(PersonaStore(tmp_path / "empty.sqlite"), None, topic_pipeline)
    key, status, *_ = shown(empty)
    assert key is None and "No personas yet" in status


def test_persona_from_state_reads_a_string_an_artifact_or_a_session() -> None:
    class Session:
        persona = "From a session."

    assert tab.persona_from_state("Plain.") == "Plain."
    assert tab.persona_from_state({"persona": "From an artifact."}) == "From an artifact."
    assert tab.persona_from_state(Session()) == "From a session."
    assert tab.persona_from_state(None) == tab.persona_from_state({"persona": 3}) == ""


def test_markdown_escaping_shows_text_literally_and_keeps_apostrophes() -> None:
    """Issue 14 item 11: quotes became &#x27; entities, which gr.Markdown shows as such."""
    assert tab.escape_markdown("<b>*x*</b>") == "&lt;b&gt;\\*x\\*&lt;/b&gt;"
    assert tab.escape_markdown("Don't say \"never\"") == "Don't say \"never\""


def test_long_theme_names_are_shortened_in_the_ranked_list() -> None:
    assert tab.shorten("Likes tea", 48) == "Likes tea"
    long = "Wants explanations suited to homework for university classes / Trusts studies"
    assert len(tab.shorten(long, 48)) == 48 and tab.shorten(long, 48).endswith("\u2026")


def test_the_tab_wires_every_handler_under_its_name(tmp_path: Path) -> None:
    with gr.Blocks() as demo:
        state = gr.State({"persona": "x"})
        built = tab.build_insights_tab(SharedPopulation(PersonaStore(tmp_path / "s.sqlite"), None, topic_pipeline),
                                       persona_state=state)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"show_population", "filter_list", "pick_from_table", "open_insight", "open_persona", "place",
            "persona_from_state"} <= names
    assert isinstance(built.ranked_table, gr.Dataframe)


def test_one_address_places_one_persona_at_a_time_and_cannot_fill_the_line(population: SharedPopulation) -> None:
    key, *_ = shown(population)
    gate = ModelGate(capacity=1, per_client=1, max_line=1)
    text = "She loves to cook pasta number 3."
    with gate.admit("first visitor", "10.0.0.1"):  # a placement of this address is running
        for visitor in ("first visitor", "same address, another tab"):
            assert "already placing a persona for you" in tab.place(population, gate, Limits(), key, text, visitor,
                                                                    "10.0.0.1")[1]
        with gate.admit("waiting", "10.0.0.2"):  # the line is full
            assert "already placing" in tab.place(population, gate, Limits(), key, text, "third", "10.0.0.3")[1]
    assert "more typical than" in tab.place(population, gate, Limits(), key, text, "first visitor", "10.0.0.1")[1]
