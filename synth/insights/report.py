"""Presentation helpers shared by the CLI report and the Gradio tab: the 2-D map figure, ranked-list lines and a
self-contained HTML report. Every text that came from users or models is escaped before it reaches HTML or a
plotly label (plotly renders a subset of HTML tags in labels)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

import plotly.graph_objects as go
import plotly.io as pio

from synth.insights.types import Insight, InsightsResult, Placement

_PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#1f77b4",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
_UNASSIGNED = "#c8c8c8"


def safe_label(text: str, width: int = 80) -> str:
    """Escape text for a plotly label and wrap it at about `width` characters."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "<br>".join(html.escape(part) for part in lines)


def stability_word(stability: float) -> str:
    if math.isnan(stability):  # no re-runs
        return "not measured"
    if stability >= 0.75:
        return f"stable {stability:.2f}"
    if stability >= 0.5:
        return f"fairly stable {stability:.2f}"
    return f"unstable {stability:.2f}"


def ranked_line(insight: Insight, n_users_total: int) -> str:
    """'N users (x%) — name — keywords — stability' (plain text)."""
    share = 100.0 * insight.n_users / max(n_users_total, 1)
    keywords = ", ".join(insight.keywords[:5]) or "no keywords"
    return (
        f"{insight.n_users} users ({share:.0f}%) \u2014 {insight.name} \u2014 {keywords} \u2014 "
        f"{stability_word(insight.stability)}"
    )


def insight_colors(result: InsightsResult) -> dict[str, str]:
    return {
        leaf.id: _PALETTE[i % len(_PALETTE)] for i, leaf in enumerate(result.leaves)
    }


def map_figure(
    result: InsightsResult,
    placement: Placement | None = None,
    highlight: str | None = None,
    max_points: int = 20000,
) -> go.Figure:
    """Scatter of all statements colored by insight (grey: in no shown insight, without hover text), optionally with
    a new persona's statements as stars and one insight highlighted."""
    figure = go.Figure()
    colors = insight_colors(result)
    names = {leaf.id: leaf.name for leaf in result.leaves}
    step = max(1, len(result.statements) // max_points)
    shown = result.statements[::step]
    groups: dict[str | None, list] = {}
    for statement in shown:
        groups.setdefault(statement.insight_id, []).append(statement)
    order = [None] + [leaf.id for leaf in result.leaves]
    for insight_id in order:
        members = groups.get(insight_id, [])
        if not members:
            continue
        label = (
            names.get(insight_id, "in no shown insight")
            if insight_id
            else "in no shown insight"
        )
        faded = highlight is not None and insight_id != highlight
        figure.add_trace(
            go.Scattergl(
                x=[s.x for s in members],
                y=[s.y for s in members],
                mode="markers",
                name=safe_label(label, 50),
                marker={
                    "size": 6,
                    "color": colors.get(insight_id, _UNASSIGNED)
                    if insight_id
                    else _UNASSIGNED,
                    "opacity": 0.15 if faded else (0.45 if insight_id is None else 0.8),
                },
                # Statements outside shown insights (noise, or clusters under the privacy floor) show no text.
                hovertext=[
                    f"{safe_label(s.text)}<br><i>user {html.escape(s.user_id)}</i><br>{safe_label(label, 60)}"
                    if insight_id
                    else "a statement in no shown insight"
                    for s in members
                ],
                hoverinfo="text",
            )
        )
    if placement is not None:
        figure.add_trace(
            go.Scatter(
                x=[s.x for s in placement.statements],
                y=[s.y for s in placement.statements],
                mode="markers",
                name="you",
                marker={
                    "size": 16,
                    "symbol": "star",
                    "color": "#111111",
                    "line": {"width": 1, "color": "#ffffff"},
                },
                hovertext=[
                    f"<b>you</b>: {safe_label(s.text)}" for s in placement.statements
                ],
                hoverinfo="text",
            )
        )
    figure.update_layout(
        height=560,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis={"visible": False},
        yaxis={"visible": False},
        legend={"itemsizing": "constant", "font": {"size": 10}},
        plot_bgcolor="white",
    )
    return figure


def _insight_rows(result: InsightsResult, insights: Sequence[Insight]) -> str:
    rows = []
    for rank, insight in enumerate(insights, start=1):
        examples = "".join(
            f"<li>{html.escape(result.statements[i].text)} "
            f"<small>({html.escape(result.statements[i].user_id)})</small></li>"
            for i in insight.statements[:5]
        )
        share = 100.0 * insight.n_users / max(result.n_users, 1)
        rows.append(
            "<tr>"
            f"<td>{rank}</td><td>{insight.n_users} ({share:.0f}%)</td>"
            f"<td><b>{html.escape(insight.name)}</b><br><small>{html.escape(insight.description)}</small>"
            f"<details><summary>examples</summary><ul>{examples}</ul></details></td>"
            f"<td>{html.escape(', '.join(insight.keywords))}</td>"
            f"<td>{html.escape(stability_word(insight.stability))}</td>"
            f"<td>{html.escape(insight.parent or '')}</td>"
            "</tr>"
        )
    return "\n".join(rows)


def html_report(result: InsightsResult) -> str:
    """A self-contained HTML page (plotly.js inlined, works offline): map, ranked insights, themes, parameters."""
    figure_html = pio.to_html(
        map_figure(result), include_plotlyjs=True, full_html=False
    )
    header = "<tr><th>#</th><th>users</th><th>insight</th><th>keywords</th><th>stability</th><th>theme</th></tr>"
    params = html.escape(json.dumps(result.params, indent=2, default=str))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Population insights</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:6px;text-align:left;vertical-align:top}}
small{{color:#555}}</style></head><body>
<h1>Population insights</h1>
<p>{result.n_users} users, {len(result.statements)} trait statements, {len(result.leaves)} insights in
{len(result.themes)} themes. Clusters with fewer than {int(result.params.get("min_users", 0))} users are not shown:
{result.hidden_small_clusters} such clusters were hidden.</p>
{figure_html}
<h2>Insights</h2><table>{header}{_insight_rows(result, result.leaves)}</table>
<h2>Themes</h2><table>{header}{_insight_rows(result, result.themes)}</table>
<h2>Parameters</h2><pre>{params}</pre>
</body></html>
"""
