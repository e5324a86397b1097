"""The "Population insights" tab: a thin Gradio view over `synth.insights` and the persona store.

Call `build_insights_tab(store)` inside an open `gr.Blocks()` (and `gr.Tab`). The population is the bundled sample
(optional) plus the store's consented personas; one fit is shared by all sessions and recomputed when the
population changes. User and model texts are only shown in plain-text components (Dataframe, Textbox, JSON) or
escaped before they reach Markdown.
"""

from __future__ import annotations

import hashlib
import html
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from synth.assets import asset_path

from synth.insights.pipeline import PopulationInsights
from synth.insights.report import map_figure, stability_word
from synth.insights.types import InsightsResult, Persona
from synth.population import read_personas_jsonl
from synth.store import PersonaStore

DEFAULT_SAMPLE = asset_path("sample_population.jsonl")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def escape_markdown(text: str) -> str:
    """Show any text literally in gr.Markdown: HTML-escape it, then backslash Markdown's special characters."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=True))


@dataclass
class _Fit:
    estimator: PopulationInsights
    result: InsightsResult
    personas: dict[str, Persona]
    artifacts: dict[str, dict[str, Any]]
    sample_ids: frozenset[str]


class _SharedFits:
    """One fitted pipeline per population fingerprint, shared by sessions (the newest two are kept)."""

    def __init__(self, pipeline_factory: Callable[[], PopulationInsights]) -> None:
        self.pipeline_factory = pipeline_factory
        self._fits: dict[str, _Fit] = {}
        self._lock = threading.Lock()

    def get(
        self,
        personas: list[Persona],
        artifacts: dict[str, dict[str, Any]],
        sample_ids: frozenset[str],
    ) -> _Fit:
        digest = hashlib.sha256()
        for persona in personas:
            digest.update(
                f"{persona.user_id}\x00{persona.text}\x00{'|'.join(persona.statements)}\x01".encode()
            )
        key = digest.hexdigest()
        with self._lock:
            if key not in self._fits:
                estimator = self.pipeline_factory()
                result = estimator.fit(personas)
                self._fits[key] = _Fit(
                    estimator,
                    result,
                    {p.user_id: p for p in personas},
                    artifacts,
                    sample_ids,
                )
                while len(self._fits) > 2:
                    self._fits.pop(next(iter(self._fits)))
            return self._fits[key]


@dataclass
class InsightsTab:
    """Handles to the tab's components, for wiring from app.py (e.g. refresh after a persona was added)."""

    refresh_button: gr.Button
    map_plot: gr.Plot
    ranked_table: gr.Dataframe
    status: gr.Markdown


def _load_population(
    store: PersonaStore, sample_path: Path | None, include_sample: bool
) -> tuple[list[Persona], dict[str, dict[str, Any]], frozenset[str]]:
    personas: dict[str, Persona] = {}
    sample_ids: set[str] = set()
    if include_sample and sample_path is not None and sample_path.exists():
        for persona in read_personas_jsonl(sample_path):
            personas[persona.user_id] = persona
            sample_ids.add(persona.user_id)
    artifacts: dict[str, dict[str, Any]] = {}
    for record in store.list(consented_only=True):
        personas[record.user_id] = record.to_persona()
        sample_ids.discard(record.user_id)
        if record.artifact:
            artifacts[record.user_id] = record.artifact
    return list(personas.values()), artifacts, frozenset(sample_ids)


def _ranked_rows(fit: _Fit, query: str) -> list[list[Any]]:
    result = fit.result
    needle = query.strip().lower()
    rows = []
    for leaf in result.leaves:
        haystack = " ".join([leaf.name, leaf.description, *leaf.keywords]).lower()
        if (
            needle
            and needle not in haystack
            and not any(
                needle in result.statements[i].text.lower() for i in leaf.statements
            )
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


def _theme_rows(fit: _Fit) -> list[list[Any]]:
    result = fit.result
    rows = []
    for theme in result.themes:
        rows.append(
            [
                theme.id,
                theme.n_users,
                theme.name,
                stability_word(theme.stability),
                "",
                "",
            ]
        )
        for child_id in theme.children:
            child = result.get(child_id)
            rows.append(["", child.n_users, "", "", child.id, child.name])
    for leaf in result.leaves:
        if leaf.parent is None:
            rows.append(["(no theme)", leaf.n_users, "", "", leaf.id, leaf.name])
    return rows


def _status(fit: _Fit) -> str:
    result = fit.result
    n_sample = sum(1 for user_id in result.user_ids if user_id in fit.sample_ids)
    min_users = int(result.params.get("min_users", 0))
    return (
        f"**{result.n_users} personas** ({n_sample} from the bundled synthetic sample, "
        f"{result.n_users - n_sample} from people who opted in) \u2192 "
        f"{len(result.statements)} trait statements \u2192 "
        f"**{len(result.leaves)} insights** in {len(result.themes)} themes.  \n"
        f"Privacy floor: clusters with fewer than **{min_users} users** are not shown; "
        f"**{result.hidden_small_clusters}** such clusters are hidden. A user can appear in several insights."
    )


def _insight_choices(fit: _Fit) -> list[tuple[str, str]]:
    return [
        (f"{leaf.n_users} users \u2014 {leaf.name}", leaf.id)
        for leaf in fit.result.leaves
    ] + [
        (f"theme: {theme.n_users} users \u2014 {theme.name}", theme.id)
        for theme in fit.result.themes
    ]


def _persona_view(fit: _Fit, user_id: str | None) -> tuple[str, Any, Any]:
    if not user_id or user_id not in fit.personas:
        return "", None, None
    artifact = fit.artifacts.get(user_id) or {}
    reasoning = artifact.get("traces")
    pairs = artifact.get("demos") or artifact.get("pairs")
    return fit.personas[user_id].text, reasoning, pairs


def _persona_from_state(value: Any) -> str:
    """The session's persona: a string, an artifact-like dict, or a session object with a ``persona``."""
    if isinstance(value, dict):
        value = value.get("persona")
    elif value is not None and not isinstance(value, str):
        value = getattr(value, "persona", None)
    return value if isinstance(value, str) else ""


def build_insights_tab(
    store: PersonaStore,
    pipeline_factory: Callable[[], PopulationInsights] = PopulationInsights,
    sample_path: str | Path | None = DEFAULT_SAMPLE,
    persona_state: gr.State | None = None,
) -> InsightsTab:
    """Build the tab inside the current Blocks context; the first fit runs when the page loads."""
    fits = _SharedFits(pipeline_factory)
    sample = Path(sample_path) if sample_path is not None else None

    def current_fit(include_sample: bool) -> _Fit:
        personas, artifacts, sample_ids = _load_population(
            store, sample, include_sample
        )
        if not personas:
            raise gr.Error(
                "No personas yet: add some from the first tab or include the bundled sample."
            )
        return fits.get(personas, artifacts, sample_ids)

    gr.Markdown(
        "### Population insights\nEach persona is split into short trait statements; similar statements are "
        "clustered and each cluster is counted by **unique users**. Stability is how often a cluster comes back "
        "when the analysis is re-run on 80% of the users with another seed (1.00 = every time)."
    )
    with gr.Row():
        include_sample = gr.Checkbox(
            value=True, label="Include the bundled synthetic sample population"
        )
        refresh_button = gr.Button("Refresh population", variant="secondary")
    status = gr.Markdown("Loading the population\u2026")
    map_plot = gr.Plot(
        label="Map of trait statements (colored by insight; grey = in no shown insight)"
    )
    search = gr.Textbox(
        label="Search insights", placeholder="e.g. privacy, recipes, concise"
    )
    ranked_table = gr.Dataframe(
        headers=["id", "users", "share", "insight", "keywords", "stability", "theme"],
        label="Insights ranked by unique users (click a row to open it)",
        interactive=False,
        wrap=True,
        column_widths=["9%", "6%", "6%", "37%", "22%", "10%", "10%"],
    )
    with gr.Accordion("Themes (insights grouped into broader themes)", open=False):
        theme_table = gr.Dataframe(
            headers=[
                "theme",
                "users",
                "theme name",
                "stability",
                "insight",
                "insight name",
            ],
            interactive=False,
            wrap=True,
        )
    with gr.Group():
        insight_picker = gr.Dropdown(
            label="Open an insight", choices=[], interactive=True
        )
        insight_details = gr.Markdown()
        member_table = gr.Dataframe(
            headers=["statement", "user"],
            label="Member statements (most central first)",
            interactive=False,
            wrap=True,
        )
        user_picker = gr.Dropdown(
            label="Open a member's persona", choices=[], interactive=True
        )
        persona_text = gr.Textbox(label="Persona", lines=4, interactive=False)
        with gr.Accordion(
            "Reasoning and preference pairs behind this persona (personas made in the app)",
            open=False,
        ):
            reasoning_json = gr.JSON(label="Bootstrapped reasoning")
            pairs_json = gr.JSON(label="Preference pairs / demos")
    with gr.Group():
        gr.Markdown("#### Where do I fall?")
        my_persona = gr.Textbox(
            label="Your persona",
            lines=4,
            placeholder="Paste a persona, or use yours from the first tab.",
        )
        with gr.Row():
            place_button = gr.Button("Place me on the map", variant="primary")
            use_mine = gr.Button(
                "Use my persona from \u201cTry it yourself\u201d",
                visible=persona_state is not None,
            )
        placement_summary = gr.Markdown()
        placement_table = gr.Dataframe(
            headers=["your statement", "joins insight", "similarity"],
            interactive=False,
            wrap=True,
        )

    def show_population(include: bool, query: str) -> tuple[Any, ...]:
        fit = current_fit(include)
        return (
            _status(fit),
            map_figure(fit.result),
            _ranked_rows(fit, query),
            _theme_rows(fit),
            gr.update(choices=_insight_choices(fit), value=None),
        )

    def filter_list(include: bool, query: str) -> list[list[Any]]:
        return _ranked_rows(current_fit(include), query)

    def open_insight(include: bool, insight_id: str | None) -> tuple[Any, ...]:
        fit = current_fit(include)
        if not insight_id:
            return "", [], gr.update(choices=[], value=None), map_figure(fit.result)
        insight = fit.result.get(insight_id)
        statements = [fit.result.statements[i] for i in insight.statements]
        details = (
            f"**{escape_markdown(insight.name)}**  \n{escape_markdown(insight.description)}  \n"
            f"{insight.n_users} users ({100 * insight.n_users / max(fit.result.n_users, 1):.0f}%) \u00b7 "
            f"keywords: {escape_markdown(', '.join(insight.keywords))} \u00b7 {stability_word(insight.stability)}"
        )
        if insight.children:
            details += "  \nContains: " + "; ".join(
                escape_markdown(fit.result.get(c).name) for c in insight.children
            )
        members = [[s.text, s.user_id] for s in statements[:500]]
        users = list(dict.fromkeys(s.user_id for s in statements))
        highlight = insight_id if not insight.children else None
        return (
            details,
            members,
            gr.update(choices=users, value=None),
            map_figure(fit.result, highlight=highlight),
        )

    def pick_from_table(include: bool, query: str, event: gr.SelectData) -> str | None:
        rows = _ranked_rows(current_fit(include), query)
        row = event.index[0] if isinstance(event.index, (list, tuple)) else event.index
        return rows[row][0] if 0 <= row < len(rows) else None

    def open_persona(include: bool, user_id: str | None) -> tuple[Any, ...]:
        return _persona_view(current_fit(include), user_id)

    def place(include: bool, text: str) -> tuple[Any, ...]:
        if not text or not text.strip():
            raise gr.Error("Paste a persona first.")
        fit = current_fit(include)
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
            [
                s.text,
                names.get(s.insight_id, "none (unusual here)")
                if s.insight_id
                else "none (unusual here)",
                round(s.similarity, 2),
            ]
            for s in placement.statements
        ]
        return map_figure(fit.result, placement=placement), summary, rows

    population_outputs = [status, map_plot, ranked_table, theme_table, insight_picker]
    root = gr.context.Context.root_block
    if root is not None:
        root.load(show_population, [include_sample, search], population_outputs)
    refresh_button.click(show_population, [include_sample, search], population_outputs)
    include_sample.change(show_population, [include_sample, search], population_outputs)
    search.change(filter_list, [include_sample, search], ranked_table)
    ranked_table.select(pick_from_table, [include_sample, search], insight_picker)
    insight_picker.change(
        open_insight,
        [include_sample, insight_picker],
        [insight_details, member_table, user_picker, map_plot],
    )
    user_picker.change(
        open_persona,
        [include_sample, user_picker],
        [persona_text, reasoning_json, pairs_json],
    )
    place_button.click(
        place,
        [include_sample, my_persona],
        [map_plot, placement_summary, placement_table],
    )
    if persona_state is not None:
        use_mine.click(_persona_from_state, persona_state, my_persona)
    return InsightsTab(
        refresh_button=refresh_button,
        map_plot=map_plot,
        ranked_table=ranked_table,
        status=status,
    )
