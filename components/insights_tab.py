"""The "Population insights" tab: a thin Gradio view over `synth.insights`.

Call `build_insights_tab(population)` inside an open `gr.Blocks()` (and `gr.Tab`). The population (bundled sample
plus the store's consented personas) and its fit, shared by all sessions and kept by store revision, come from
`synth.insights.population.SharedPopulation`. A shown view remembers the key of the fit it came from (a `gr.State`),
so its insight ids mean the same thing on every later click until the visitor refreshes. Each event handler is a
module-level function of the `SharedPopulation` (bound with `functools.partial` when wired) and the input values, so
a test can call it directly; none raises at the visitor: problems are sentences in the status or the view they
concern. User and model texts are only shown in plain-text components (Dataframe, Textbox, JSON) or escaped before
they reach Markdown.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import gradio as gr

from components.limits import GateRefused, Limits, ModelGate, client_address
from synth.insights.population import EmptyPopulationError, PopulationFit, SharedPopulation
from synth.insights.report import map_figure, stability_word
from synth.insights.types import Insight, InsightsResult

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")
NO_INSIGHT = "none (unusual here)"
FIRST_FIT_WAIT_S = 600.0  # how long the first view waits for the first fit after a start
THEME_CHARS = 48  # the ranked list's theme column shows names this long (the themes table shows them whole)
PLACE_WAIT_S = 30  # how long a placement waits for the one before it
PLACE_LINE = 8  # placements waiting at most, all visitors together
COMMON_GROUND = "common ground: "  # marks a wording many personas share (filler), not a trait setting users apart
STALE = "This view's population has been replaced by a newer one: press “Refresh population” to see it."


def escape_markdown(text: str) -> str:
    """Show any text literally in gr.Markdown: escape HTML's <, > and & (quotes are plain text in Markdown and must
    stay characters, not entities), then backslash Markdown's special characters."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


# ---- views of one fit ------------------------------------------------------------------------------------------
def confirmed_text(fit: PopulationFit, insight_id: str) -> str:
    """How often the insight's members confirmed their statements in it ("" when withheld or none rated)."""
    confirmation = fit.fidelity.get(insight_id)
    if confirmation is None or confirmation.share.value is None:
        return ""
    return f"{100 * confirmation.share.value:.0f}% of {confirmation.share.decided}"


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
                insight_label(result, leaf),
                ", ".join(leaf.keywords[:5]),
                stability_word(leaf.stability),
                confirmed_text(fit, leaf.id),
                shorten(result.get(leaf.parent).name, THEME_CHARS) if leaf.parent else "",
            ]
        )
    return rows


def insight_label(result: InsightsResult, insight: Insight) -> str:
    """The insight's name, marked when it is common ground (one wording many personas share)."""
    return COMMON_GROUND + insight.name if result.is_common_ground(insight.id) else insight.name


def theme_rows(fit: PopulationFit) -> list[list[Any]]:
    """Each theme, then its insights; insights in no theme last."""
    result = fit.result
    rows = []
    for theme in result.themes:
        rows.append([theme.id, theme.n_users, theme.name, stability_word(theme.stability), "", ""])
        for child_id in theme.children:
            child = result.get(child_id)
            rows.append(["", child.n_users, "", "", child.id, insight_label(result, child)])
    for leaf in result.leaves:
        if leaf.parent is None:
            rows.append(["(no theme)", leaf.n_users, "", "", leaf.id, insight_label(result, leaf)])
    return rows


def status_text(fit: PopulationFit, current_revision: int | None = None) -> str:
    result = fit.result
    n_sample = sum(1 for user_id in result.user_ids if user_id in fit.population.sample_ids)
    min_users = int(result.params.get("min_users", 0))
    text = (
        f"**{result.n_users} personas** ({n_sample} from the bundled synthetic sample, "
        f"{result.n_users - n_sample} from people who opted in) \u2192 "
        f"{len(result.statements)} trait statements \u2192 "
        f"**{len(result.leaves)} insights** in {len(result.themes)} themes.  \n"
        f"Privacy floor: clusters with fewer than **{min_users} users** are not shown; "
        f"**{result.hidden_small_clusters}** such clusters are hidden. A user can appear in several insights.  \n"
        f"{fidelity_text(fit)}"
    )
    if current_revision is not None and current_revision != fit.revision:
        text += "  \nSomeone joined or left since: the newer population is being analysed; refresh in a moment."
    return text


def fidelity_text(fit: PopulationFit) -> str:
    """The overall "is this you?" figure, over consenting visitors and only above the privacy floor."""
    fidelity = fit.fidelity
    if fidelity.overall is None or fidelity.overall.value is None:
        return (f"“Is this you?”: {fidelity.n_users} visitor(s) shared their answers; figures appear from "
                f"{fidelity.min_users} on.")
    return (f"“Is this you?”: **{100 * fidelity.overall.value:.0f}%** of {fidelity.overall.decided} rated statements "
            f"were confirmed by their own authors ({fidelity.n_users} visitors who shared their answers).")


def insight_choices(fit: PopulationFit) -> list[tuple[str, str]]:
    result = fit.result
    return [(f"{leaf.n_users} users \u2014 {insight_label(result, leaf)}", leaf.id) for leaf in result.leaves] + [
        (f"theme: {theme.n_users} users \u2014 {theme.name}", theme.id) for theme in result.themes
    ]


def insight_details(fit: PopulationFit, insight_id: str) -> str:
    result = fit.result
    insight = result.get(insight_id)
    details = (
        f"**{escape_markdown(insight.name)}**  \n{escape_markdown(insight.description)}  \n"
        f"{insight.n_users} users ({100 * insight.n_users / max(result.n_users, 1):.0f}%) \u00b7 "
        f"keywords: {escape_markdown(', '.join(insight.keywords))} \u00b7 {stability_word(insight.stability)}"
    )
    confirmed = confirmed_text(fit, insight_id)
    if result.is_common_ground(insight_id):
        details += ("  \nCommon ground: one wording that many personas share (such as the filler models add to every "
                    "persona), shown on its own rather than as a trait that sets some users apart.")
    if confirmed:
        details += f"  \nConfirmed by their authors: {confirmed} rated statements"
    if insight.children:
        details += "  \nContains: " + "; ".join(escape_markdown(result.get(c).name) for c in insight.children)
    return details


# ---- event handlers --------------------------------------------------------------------------------------------
def show_population(population: SharedPopulation, include_sample: bool, query: str | None) -> Iterator[tuple]:
    """shown fit's key, status, map, ranked list, themes, insight picker. Answers with the newest finished fit at
    once; only the first fit after a start is waited for."""
    skip = [gr.skip()] * 5
    try:
        fit = population.latest(include_sample, timeout=0)
        if fit is None:
            yield gr.skip(), "Analysing the population (the first time after a start takes a moment)\u2026", *skip[1:]
            fit = population.latest(include_sample, timeout=FIRST_FIT_WAIT_S)
    except EmptyPopulationError as error:
        yield None, str(error), None, [], [], gr.update(choices=[], value=None)
        return
    except Exception as error:  # a broken pipeline: say so, keep the page usable
        yield gr.skip(), f"The population could not be analysed ({error}); press \u201cRefresh population\u201d.", *(
            skip[1:])
        return
    if fit is None:
        yield gr.skip(), "Still analysing the population; press \u201cRefresh population\u201d in a minute.", *skip[1:]
        return
    yield (
        fit.key,
        status_text(fit, population.store.revision()),
        map_figure(fit.result),
        ranked_rows(fit, query),
        theme_rows(fit),
        gr.update(choices=insight_choices(fit), value=None),
    )


def filter_list(population: SharedPopulation, key: str | None, query: str | None) -> list[list[Any]] | Any:
    fit = population.by_key(key or "")
    return ranked_rows(fit, query) if fit is not None else gr.skip()


def pick_from_table(event: gr.SelectData) -> str | None:
    """The insight id of the clicked row of the ranked list (its first column)."""
    return event.row_value[0] if event.row_value else None


def open_insight(population: SharedPopulation, key: str | None, insight_id: str | None) -> tuple[Any, ...]:
    """details, member statements, member picker, map with the insight highlighted."""
    fit = population.by_key(key or "")
    if fit is None:
        return (STALE if key else "", [], gr.update(choices=[], value=None), gr.skip())
    if not insight_id:
        return "", [], gr.update(choices=[], value=None), map_figure(fit.result)
    try:
        insight = fit.result.get(insight_id)
    except KeyError:
        return f"No insight {escape_markdown(insight_id)} in this view; pick one from the list.", [], gr.update(
            choices=[], value=None), gr.skip()
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


def open_persona(population: SharedPopulation, key: str | None, user_id: str | None) -> tuple[Any, ...]:
    """The evidence chain below a member: persona text, what its author shared, the reasoning, the pairs."""
    fit = population.by_key(key or "")
    persona = fit.population.persona(user_id) if fit is not None and user_id else None
    if persona is None:
        return "", STALE if fit is None and key else "", None, None
    if user_id in fit.population.sample_ids:
        return (persona.text, "From the bundled synthetic sample: a generated persona, with no reasoning or pairs "
                              "behind it.", None, None)
    record = population.store.get(user_id)
    if record is None or not record.consent:
        return "", "Its author removed this persona from the population.", None, None
    if record.evidence is None:
        return record.persona, "Its author shared the persona and its statements only.", None, None
    evidence = record.evidence
    shared = (f"Its author also shared the evidence: the reasoning about {len(evidence.pairs)} pair(s) from the "
              f"studio's public bank, and those pairs.")
    return record.persona, shared, list(evidence.reasoning), list(evidence.pairs)


def place(population: SharedPopulation, gate: ModelGate, limits: Limits, key: str | None, text: str | None,
          visitor: str = "", client: str = "") -> tuple[Any, ...]:
    """map with the persona's statements, summary, and the statements with the insight each joins. ``gate`` runs
    one placement at a time, with at most one per visitor and per address waiting or running."""
    try:
        ticket = gate.admit(visitor, client)
    except GateRefused:
        return gr.skip(), ("\u201cWhere do I fall?\u201d is already placing a persona for you, or many are waiting; "
                           "try again when it has finished."), []
    with ticket:
        if not ticket.wait(timeout=PLACE_WAIT_S):
            return gr.skip(), ("Many personas are being placed right now; press \u201cPlace me on the map\u201d "
                               "again."), []
        return _place(population, limits, key, text)


def _place(population: SharedPopulation, limits: Limits, key: str | None, text: str | None) -> tuple[Any, ...]:
    fit = population.by_key(key or "")
    text = text or ""
    if not text.strip():
        return gr.skip(), "Paste a persona first (or use yours from the first tab).", []
    if fit is None:
        return gr.skip(), STALE if key else "The population is still loading; try again in a moment.", []
    if len(text) > limits.max_field_chars:
        return gr.skip(), (f"That text is {len(text):,} characters; \u201cWhere do I fall?\u201d takes at most "
                           f"{limits.max_field_chars:,}. Paste a persona, not a document."), []
    n_statements = len(fit.estimator.splitter_.split(text))
    if n_statements > limits.max_place_statements:
        return gr.skip(), (f"That text splits into {n_statements} statements; \u201cWhere do I fall?\u201d places at "
                           f"most {limits.max_place_statements}. Shorten it to your persona."), []
    try:
        placement = fit.estimator.place(text)
    except ValueError as error:
        return gr.skip(), f"Nothing to place: {escape_markdown(str(error))}.", []
    except Exception as error:  # e.g. the embedder failed: say so, keep the page usable
        return gr.skip(), (f"Your persona could not be placed ({escape_markdown(str(error))}); press \u201cPlace me "
                           f"on the map\u201d to try again."), []
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
    """Handles to the tab's components, for wiring from the studio (e.g. show the current population whenever the
    tab is opened: ``show_on(tab.select)``)."""

    refresh_button: gr.Button
    map_plot: gr.Plot
    ranked_table: gr.Dataframe
    status: gr.Markdown
    show: Callable[..., Iterator[tuple]]
    show_inputs: list[gr.components.Component]
    show_outputs: list[gr.components.Component]

    def show_on(self, trigger: Callable[..., Any]) -> None:
        """Show the population as it is now when ``trigger`` (an event listener, e.g. a tab's ``select``) fires."""
        trigger(self.show, self.show_inputs, self.show_outputs, api_name=False)


def build_insights_tab(
    population: SharedPopulation,
    limits: Limits | None = None,
    persona_state: gr.State | None = None,
) -> InsightsTab:
    """Build the tab inside the current Blocks context; the first fit starts now, in the background."""
    limits = limits or Limits()
    population.refresh(include_sample=True)
    gr.Markdown(
        "### Population insights\nEach persona is split into short trait statements; similar statements are "
        "clustered and each cluster is counted by **unique users**. Stability is how often a cluster comes back "
        "when the analysis is re-run on 80% of the users with another seed (1.00 = every time). *Confirmed* is how "
        "often the members who shared their answers to \u201cIs this you?\u201d said their statement in it is them."
    )
    shown_key = gr.State(None)
    with gr.Row():
        include_sample = gr.Checkbox(value=True, label="Include the bundled synthetic sample population",
                                     elem_id="include-sample")
        refresh_button = gr.Button("Refresh population", variant="secondary", elem_id="btn-refresh")
    status = gr.Markdown("Loading the population\u2026", elem_id="population-status")
    map_plot = gr.Plot(label="Map of trait statements (colored by insight; grey = in no shown insight)",
                       elem_id="population-map")
    search = gr.Textbox(label="Search insights", placeholder="e.g. privacy, recipes, concise",
                        max_length=limits.max_field_chars, elem_id="insight-search")
    ranked_table = gr.Dataframe(
        headers=["id", "users", "share", "insight", "keywords", "stability", "confirmed", "theme"],
        label="Insights ranked by unique users (click a row to open it)",
        interactive=False,
        wrap=True,
        column_widths=["8%", "6%", "6%", "33%", "20%", "9%", "8%", "10%"],
        elem_id="ranked-insights",
    )
    with gr.Accordion("Themes (insights grouped into broader themes)", open=False):
        theme_table = gr.Dataframe(
            headers=["theme", "users", "theme name", "stability", "insight", "insight name"],
            interactive=False,
            wrap=True,
        )
    with gr.Group():
        insight_picker = gr.Dropdown(label="Open an insight", choices=[], interactive=True, elem_id="insight-picker")
        insight_view = gr.Markdown(elem_id="insight-view")
        member_table = gr.Dataframe(
            headers=["statement", "user"],
            label="Member statements (most central first)",
            interactive=False,
            wrap=True,
            elem_id="member-statements",
        )
        user_picker = gr.Dropdown(label="Open a member's persona", choices=[], interactive=True,
                                  elem_id="member-picker")
        persona_text = gr.Textbox(label="Persona", lines=4, interactive=False, elem_id="member-persona")
        shared_note = gr.Markdown(elem_id="member-shared")
        with gr.Accordion("Reasoning and preference pairs behind this persona (only what its author shared)",
                          open=False):
            reasoning_json = gr.JSON(label="Verified reasoning", elem_id="member-reasoning")
            pairs_json = gr.JSON(label="The public pairs it is about", elem_id="member-pairs")
    with gr.Group():
        gr.Markdown("#### Where do I fall?")
        my_persona = gr.Textbox(
            label="Your persona", lines=4, max_length=limits.max_field_chars, elem_id="my-persona",
            placeholder="Paste a persona, or use yours from the first tab."
        )
        with gr.Row():
            place_button = gr.Button("Place me on the map", variant="primary", elem_id="btn-place")
            use_mine = gr.Button(
                "Use my persona from \u201cTry it yourself\u201d", visible=persona_state is not None,
                elem_id="btn-use-mine"
            )
        placement_summary = gr.Markdown(elem_id="placement-summary")
        placement_table = gr.Dataframe(
            headers=["your statement", "joins insight", "similarity"], interactive=False, wrap=True,
            elem_id="placement-table"
        )

    population_outputs = [shown_key, status, map_plot, ranked_table, theme_table, insight_picker]
    show = partial(show_population, population)
    root = gr.context.Context.root_block
    if root is not None:
        root.load(show, [include_sample, search], population_outputs, api_name="show_population")
    refresh_button.click(show, [include_sample, search], population_outputs, api_name="show_population")
    include_sample.change(show, [include_sample, search], population_outputs, api_name="show_population")
    search.change(partial(filter_list, population), [shown_key, search], ranked_table, api_name="filter_list")
    ranked_table.select(pick_from_table, None, insight_picker)
    insight_picker.change(
        partial(open_insight, population),
        [shown_key, insight_picker],
        [insight_view, member_table, user_picker, map_plot],
        api_name="open_insight",
    )
    user_picker.change(
        partial(open_persona, population),
        [shown_key, user_picker],
        [persona_text, shared_note, reasoning_json, pairs_json],
        api_name="open_persona",
    )
    place_gate = ModelGate(capacity=1, per_client=1, max_line=PLACE_LINE)

    def place_for_visitor(key: str | None, text: str | None, request: gr.Request) -> tuple[Any, ...]:
        return place(population, place_gate, limits, key, text, visitor=request.session_hash or "",
                     client=client_address(request))

    place_button.click(
        place_for_visitor,
        [shown_key, my_persona],
        [map_plot, placement_summary, placement_table],
        api_name="place",
    )
    if persona_state is not None:
        use_mine.click(persona_from_state, persona_state, my_persona)
    return InsightsTab(refresh_button=refresh_button, map_plot=map_plot, ranked_table=ranked_table, status=status,
                       show=show, show_inputs=[include_sample, search], show_outputs=population_outputs)
