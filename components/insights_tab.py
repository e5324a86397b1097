"""The "Population insights" tab: a thin Gradio view over `synth.insights`.

Call `build_insights_tab(store)` inside an open `gr.Blocks()` (and `gr.Tab`). The population (bundled sample plus the
store's consented personas) and its fit, shared by all sessions, come from `synth.insights.population`. Each event
handler is a module-level function of the `SharedPopulation` (bound with `functools.partial` when wired) and the
input values, so a test can call it directly. User and model texts are only shown in plain-text components
(Dataframe, Textbox, JSON) or escaped before they reach Markdown.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gradio as gr

from synth.insights.pipeline import PopulationInsights
from synth.insights.population import (
    DEFAULT_SAMPLE,
    EmptyPopulationError,
    FitCache,
    PopulationFit,
    SharedPopulation,
)
from synth.insights.report import map_figure, stability_word
from synth.store import PersonaStore

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
NO_INSIGHT = "none (unusual here)"


def escape_markdown(text: str) -> str:
    """Show any text literally in gr.Markdown: HTML-escape it, then backslash Markdown's special characters."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=True))


# ---- views of one fit ------------------------------------------------------------------------------------------
def ranked_rows(fit: PopulationFit, query: str | None) -> list[list[Any]]:
    """The ranked list, keeping insights whose name, description, keywords or statements contain `query`."""
    result = fit.result
    needle = (query or "").strip().lower()
    rows = []
    for leaf in result.leaves:
        haystack = " ".join([leaf.name, leaf.description, *leaf.keywords]).lower()
        if (
            needle
            and needle not in haystack
            and not any(needle in result.statements[i].text.lower() for i in leaf.statements)
        ):
            continue
        rows.append(
            [
                leaf.id,
                leaf.n_users,
                f"{100 * leaf.n_users / max(result.n_users, 1):.0f}%",
                leaf.name,
                ", ".join(leaf.keywords[:5]),
                stability_word(leaf.stability),
                result.get(leaf.parent).name if leaf.parent else "",
            ]
        )
    return rows


def theme_rows(fit: PopulationFit) -> list[list[Any]]:
    """Each theme, then its insights; insights in no theme last."""
    result = fit.result
    rows = []
    for theme in result.themes:
        rows.append([theme.id, theme.n_users, theme.name, stability_word(theme.stability), "", ""])
        for child_id in theme.children:
            child = result.get(child_id)
            rows.append(["", child.n_users, "", "", child.id, child.name])
    for leaf in result.leaves:
        if leaf.parent is None:
            rows.append(["(no theme)", leaf.n_users, "", "", leaf.id, leaf.name])
    return rows


def status_text(fit: PopulationFit) -> str:
    result = fit.result
    n_sample = sum(1 for user_id in result.user_ids if user_id in fit.population.sample_ids)
    min_users = int(result.params.get("min_users", 0))
    return (
        f"**{result.n_users} personas** ({n_sample} from the bundled synthetic sample, "
        f"{result.n_users - n_sample} from people who opted in) \u2192 "
        f"{len(result.statements)} trait statements \u2192 "
        f"**{len(result.leaves)} insights** in {len(result.themes)} themes.  \n"
        f"Privacy floor: clusters with fewer than **{min_users} users** are not shown; "
        f"**{result.hidden_small_clusters}** such clusters are hidden. A user can appear in several insights."
    )


def insight_choices(fit: PopulationFit) -> list[tuple[str, str]]:
    return [(f"{leaf.n_users} users \u2014 {leaf.name}", leaf.id) for leaf in fit.result.leaves] + [
        (f"theme: {theme.n_users} users \u2014 {theme.name}", theme.id) for theme in fit.result.themes
    ]


def insight_details(fit: PopulationFit, insight_id: str) -> str:
    result = fit.result
    insight = result.get(insight_id)
    details = (
        f"**{escape_markdown(insight.name)}**  \n{escape_markdown(insight.description)}  \n"
        f"{insight.n_users} users ({100 * insight.n_users / max(result.n_users, 1):.0f}%) \u00b7 "
        f"keywords: {escape_markdown(', '.join(insight.keywords))} \u00b7 {stability_word(insight.stability)}"
    )
    if insight.children:
        details += "  \nContains: " + "; ".join(escape_markdown(result.get(c).name) for c in insight.children)
    return details


# ---- event handlers --------------------------------------------------------------------------------------------
def current_fit(population: SharedPopulation, include_sample: bool) -> PopulationFit:
    try:
        return population.current_fit(include_sample)
    except EmptyPopulationError as error:
        raise gr.Error(str(error)) from error


def show_population(population: SharedPopulation, include_sample: bool, query: str | None) -> tuple[Any, ...]:
    """status, map, ranked list, themes, insight picker."""
    fit = current_fit(population, include_sample)
    return (
        status_text(fit),
        map_figure(fit.result),
        ranked_rows(fit, query),
        theme_rows(fit),
        gr.update(choices=insight_choices(fit), value=None),
    )


def filter_list(population: SharedPopulation, include_sample: bool, query: str | None) -> list[list[Any]]:
    return ranked_rows(current_fit(population, include_sample), query)


def pick_from_table(event: gr.SelectData) -> str | None:
    """The insight id of the clicked row of the ranked list (its first column)."""
    return event.row_value[0] if event.row_value else None


def open_insight(population: SharedPopulation, include_sample: bool, insight_id: str | None) -> tuple[Any, ...]:
    """details, member statements, member picker, map with the insight highlighted."""
    fit = current_fit(population, include_sample)
    if not insight_id:
        return "", [], gr.update(choices=[], value=None), map_figure(fit.result)
    insight = fit.result.get(insight_id)
    statements = [fit.result.statements[i] for i in insight.statements]
    members = [[s.text, s.user_id] for s in statements[:500]]
    users = list(dict.fromkeys(s.user_id for s in statements))
    highlight = insight_id if not insight.children else None
    return (
        insight_details(fit, insight_id),
        members,
        gr.update(choices=users, value=None),
        map_figure(fit.result, highlight=highlight),
    )


def open_persona(population: SharedPopulation, include_sample: bool, user_id: str | None) -> tuple[Any, ...]:
    """persona text, reasoning and pairs behind it (for personas made in the app)."""
    fit = current_fit(population, include_sample)
    persona = fit.population.persona(user_id) if user_id else None
    if persona is None:
        return "", None, None
    artifact = fit.population.artifacts.get(persona.user_id) or {}
    return persona.text, artifact.get("traces"), artifact.get("demos") or artifact.get("pairs")


def place(population: SharedPopulation, include_sample: bool, text: str | None) -> tuple[Any, ...]:
    """map with the persona's statements, summary, and the statements with the insight each joins."""
    if not text or not text.strip():
        raise gr.Error("Paste a persona first.")
    fit = current_fit(population, include_sample)
    try:
        placement = fit.estimator.place(text)
    except ValueError as error:
        raise gr.Error(str(error)) from error
    nearest = "\n".join(
        f"- {escape_markdown(n.name)} \u2014 similarity {n.similarity:.2f}, {100 * n.share_of_users:.0f}% of users"
        for n in placement.nearest_insights
    )
    summary = (
        f"Your statements join insights shared on average by **{100 * placement.typicality:.0f}%** of users: "
        f"more typical than **{placement.typicality_percentile:.0f}%** of the population.  \n"
        f"Nearest insights:\n{nearest}"
    )
    names = {leaf.id: leaf.name for leaf in fit.result.leaves}
    rows = [
        [s.text, names.get(s.insight_id, NO_INSIGHT) if s.insight_id else NO_INSIGHT, round(s.similarity, 2)]
        for s in placement.statements
    ]
    return map_figure(fit.result, placement=placement), summary, rows


def persona_from_state(value: Any) -> str:
    """The session's persona: a string, an artifact-like dict, or a session object with a ``persona``."""
    if isinstance(value, dict):
        value = value.get("persona")
    elif value is not None and not isinstance(value, str):
        value = getattr(value, "persona", None)
    return value if isinstance(value, str) else ""


# ---- layout and wiring -----------------------------------------------------------------------------------------
@dataclass
class InsightsTab:
    """Handles to the tab's components, for wiring from the studio (e.g. refresh after a persona was added)."""

    refresh_button: gr.Button
    map_plot: gr.Plot
    ranked_table: gr.Dataframe
    status: gr.Markdown


def build_insights_tab(
    store: PersonaStore,
    pipeline_factory: Callable[[], PopulationInsights] = PopulationInsights,
    sample_path: str | Path | None = DEFAULT_SAMPLE,
    persona_state: gr.State | None = None,
) -> InsightsTab:
    """Build the tab inside the current Blocks context; the first fit runs when the page loads."""
    population = SharedPopulation(
        store, Path(sample_path) if sample_path is not None else None, FitCache(pipeline_factory)
    )
    gr.Markdown(
        "### Population insights\nEach persona is split into short trait statements; similar statements are "
        "clustered and each cluster is counted by **unique users**. Stability is how often a cluster comes back "
        "when the analysis is re-run on 80% of the users with another seed (1.00 = every time)."
    )
    with gr.Row():
        include_sample = gr.Checkbox(value=True, label="Include the bundled synthetic sample population")
        refresh_button = gr.Button("Refresh population", variant="secondary")
    status = gr.Markdown("Loading the population\u2026")
    map_plot = gr.Plot(label="Map of trait statements (colored by insight; grey = in no shown insight)")
    search = gr.Textbox(label="Search insights", placeholder="e.g. privacy, recipes, concise")
    ranked_table = gr.Dataframe(
        headers=["id", "users", "share", "insight", "keywords", "stability", "theme"],
        label="Insights ranked by unique users (click a row to open it)",
        interactive=False,
        wrap=True,
        column_widths=["9%", "6%", "6%", "37%", "22%", "10%", "10%"],
    )
    with gr.Accordion("Themes (insights grouped into broader themes)", open=False):
        theme_table = gr.Dataframe(
            headers=["theme", "users", "theme name", "stability", "insight", "insight name"],
            interactive=False,
            wrap=True,
        )
    with gr.Group():
        insight_picker = gr.Dropdown(label="Open an insight", choices=[], interactive=True)
        insight_view = gr.Markdown()
        member_table = gr.Dataframe(
            headers=["statement", "user"],
            label="Member statements (most central first)",
            interactive=False,
            wrap=True,
        )
        user_picker = gr.Dropdown(label="Open a member's persona", choices=[], interactive=True)
        persona_text = gr.Textbox(label="Persona", lines=4, interactive=False)
        with gr.Accordion(
            "Reasoning and preference pairs behind this persona (personas made in the app)", open=False
        ):
            reasoning_json = gr.JSON(label="Bootstrapped reasoning")
            pairs_json = gr.JSON(label="Preference pairs / demos")
    with gr.Group():
        gr.Markdown("#### Where do I fall?")
        my_persona = gr.Textbox(
            label="Your persona", lines=4, placeholder="Paste a persona, or use yours from the first tab."
        )
        with gr.Row():
            place_button = gr.Button("Place me on the map", variant="primary")
            use_mine = gr.Button(
                "Use my persona from \u201cTry it yourself\u201d", visible=persona_state is not None
            )
        placement_summary = gr.Markdown()
        placement_table = gr.Dataframe(
            headers=["your statement", "joins insight", "similarity"], interactive=False, wrap=True
        )

    population_outputs = [status, map_plot, ranked_table, theme_table, insight_picker]
    show = partial(show_population, population)
    root = gr.context.Context.root_block
    if root is not None:
        root.load(show, [include_sample, search], population_outputs, api_name="show_population")
    refresh_button.click(show, [include_sample, search], population_outputs, api_name="show_population")
    include_sample.change(show, [include_sample, search], population_outputs, api_name="show_population")
    search.change(partial(filter_list, population), [include_sample, search], ranked_table, api_name="filter_list")
    ranked_table.select(pick_from_table, None, insight_picker)
    insight_picker.change(
        partial(open_insight, population),
        [include_sample, insight_picker],
        [insight_view, member_table, user_picker, map_plot],
        api_name="open_insight",
    )
    user_picker.change(
        partial(open_persona, population),
        [include_sample, user_picker],
        [persona_text, reasoning_json, pairs_json],
        api_name="open_persona",
    )
    place_button.click(
        partial(place, population),
        [include_sample, my_persona],
        [map_plot, placement_summary, placement_table],
        api_name="place",
    )
    if persona_state is not None:
        use_mine.click(persona_from_state, persona_state, my_persona)
    return InsightsTab(refresh_button=refresh_button, map_plot=map_plot, ranked_table=ranked_table, status=status)
