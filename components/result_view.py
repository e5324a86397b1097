"""Render a fitted SynthesizeMe: persona card, demos, accuracies, prompts, and judge verdicts (all text escaped)."""

from __future__ import annotations

from typing import Any

from components.run_view import escape
from synth.fidelity import Rating, visitor_fidelity


def persona_card(artifact: dict[str, Any]) -> str:
    persona = artifact.get("persona") or "(the model wrote no persona from these choices)"
    personalized = artifact.get("validation_accuracy")
    default = artifact.get("default_validation_accuracy")
    stats = ""
    if personalized is not None and default is not None:
        n_val = len(artifact.get("pairs", {}).get("validation", []))
        stats = (f'<div class="acc"><div class="acc-item"><span class="acc-num">{100 * default:.0f}%</span>'
                 f'<span class="acc-label">default judge</span></div>'
                 f'<div class="acc-item personal"><span class="acc-num">{100 * personalized:.0f}%</span>'
                 f'<span class="acc-label">your judge</span></div>'
                 f'<div class="acc-note">validation accuracy on {n_val} held-out pair(s), both orderings</div></div>')
    return (f'<div class="persona-card" id="persona-card"><div class="persona-title">Your persona</div>'
            f'<div class="text-block persona-text">{escape(persona)}</div>{stats}'
            f'<div class="persona-meta">model {escape(str(artifact.get("model", "?")))} · Θ '
            f'{escape(str(artifact.get("theta_id", "?")))}</div></div>')


def demos_html(demos: list[dict[str, Any]]) -> str:
    if not demos:
        return '<div class="demos empty">No demos chosen: the persona alone judged best.</div>'
    blocks = []
    for number, demo in enumerate(demos, start=1):
        blocks.append(
            f'<details class="demo"><summary>Demo {number}: preferred <b>{escape(str(demo.get("preferred")))}</b>'
            f' — {escape(_first_line(demo.get("conversation", "")))}</summary>'
            f'<div class="demo-grid"><div><div class="demo-label">First reply</div>'
            f'<div class="text-block">{escape(demo.get("first_reply", ""))}</div></div>'
            f'<div><div class="demo-label">Second reply</div>'
            f'<div class="text-block">{escape(demo.get("second_reply", ""))}</div></div></div>'
            f'<div class="demo-label">Reasoning</div>'
            f'<div class="text-block">{escape(demo.get("reasoning", ""))}</div></details>')
    return f'<div class="demos">{"".join(blocks)}</div>'


def messages_text(messages: list[dict[str, str]]) -> str:
    """Chat messages as plain text a person can paste into any chat UI or API call."""
    return "\n\n".join(f"### {m['role']}\n{m['content']}" for m in messages)


def verdicts_html(p_personal: float, p_default: float) -> str:
    rows = []
    for name, p_a in (("Your judge", p_personal), ("Default judge", p_default)):
        winner = "A" if p_a >= 0.5 else "B"
        rows.append(f'<div class="verdict"><span class="verdict-name">{name}</span>'
                    f'<span class="verdict-win">prefers {winner}</span>'
                    f'<div class="verdict-bar"><div class="verdict-a" style="width:{100 * p_a:.0f}%">'
                    f'A {100 * p_a:.0f}%</div><div class="verdict-b">B {100 * (1 - p_a):.0f}%</div></div></div>')
    return f'<div class="verdicts">{"".join(rows)}</div>'


def _first_line(text: str, limit: int = 80) -> str:
    line = next((s for s in (text or "").splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def fidelity_html(statements: list[str], ratings: dict[str, str]) -> str:
    """The visitor's fidelity: the share of their decided answers that say "that's me" (``synth.fidelity``)."""
    if not statements:
        return ('<div class="fidelity empty">This persona has no trait statements to rate (the model wrote too '
                'little).</div>')
    share = visitor_fidelity(Rating("you", statement, ratings[statement]) for statement in statements
                             if statement in ratings)
    if share.value is None:
        return (f'<div class="fidelity">Rate each statement: is it you? Your fidelity (the share of “that\'s me”) '
                f'appears here. {share.total} of {len(statements)} answered.</div>')
    low, high = share.interval()
    return (f'<div class="fidelity" id="fidelity"><span class="fidelity-num">{100 * share.value:.0f}%</span> '
            f'fidelity: {share.confirmed} of {share.decided} decided statements are you ({share.unsure} not sure; '
            f'95% interval {100 * low:.0f}–{100 * high:.0f}%). {share.total} of {len(statements)} answered.</div>')
