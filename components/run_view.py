"""Render the engine's fit events as they arrive: a staged progress bar and a live log (all text escaped)."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field

from synth import events as ev
from synth.events import Stage
from synth.judge import VERIFIED_SOURCES

STAGES = (Stage.BOOTSTRAP, Stage.PERSONA, Stage.DEMOS)


def escape(text: str) -> str:
    return html.escape(text or "", quote=True)


@dataclass
class RunView:
    """Folds events into what the page shows; one per fit."""

    started: float = field(default_factory=time.perf_counter)
    stage: Stage | None = None
    stage_total: dict[Stage, int] = field(default_factory=dict)
    stage_done: dict[Stage, int] = field(default_factory=dict)
    finished_stages: set[Stage] = field(default_factory=set)
    entries: list[str] = field(default_factory=list)
    state: str = "running"  # running | finished | cancelled | failed

    def apply(self, event: ev.Event) -> None:
        if isinstance(event, ev.StageStarted):
            self.stage = event.stage
            self.stage_total[event.stage] = max(event.total_steps, 1)
            self.stage_done[event.stage] = 0
            self.entries.append(f'<div class="ev ev-stage">{escape(event.stage.title)}</div>')
        elif isinstance(event, ev.StageFinished):
            self.finished_stages.add(event.stage)
            self.entries.append(f'<div class="ev ev-muted">{escape(event.stage.title)} done in '
                                f'{event.seconds:.1f} s</div>')
        elif isinstance(event, ev.TraceBootstrapped):
            self._step(event.stage)
            mark = ('<span class="kept">✓ kept</span>' if event.kept
                    else '<span class="rejected">✗ rejected</span>')
            prob = "" if event.p_first is None else f" · P(First)={event.p_first:.2f}"
            if event.verdict_source not in VERIFIED_SOURCES:
                prob += f" · {event.verdict_source} verdict: not verified"
            self.entries.append(
                f'<details class="ev ev-trace"><summary>{mark} pair {event.pair_index + 1}: judge said '
                f'<b>{escape(event.verdict)}</b>, you chose <b>{escape(event.user_choice)}</b>{prob}'
                f'<span class="ev-prompt"> — {escape(_short(event.prompt))}</span></summary>'
                f'<div class="text-block">{escape(event.reasoning) or "(no reasoning written)"}</div></details>')
        elif isinstance(event, ev.CandidateScored):
            self._step(event.stage)
            best = ' <span class="best">★ best so far</span>' if event.best_so_far else ""
            self.entries.append(
                f'<div class="ev">candidate {event.candidate_id} · {escape(event.kind)} · {event.n_demos} demos: '
                f'validation <b>{100 * event.accuracy:.0f}%</b>{best}</div>')
        elif isinstance(event, ev.PersonaReady):
            self._step(Stage.PERSONA)
            self.entries.append(f'<div class="ev ev-persona"><b>Persona written</b>'
                                f'<div class="text-block">{escape(event.persona) or "(empty)"}</div></div>')
        elif isinstance(event, ev.DemosChosen):
            self.entries.append(f'<div class="ev ev-stage">Chose candidate {event.candidate_id}: {event.n_demos} '
                                f'demos, validation {100 * event.validation_accuracy:.0f}%</div>')
        elif isinstance(event, ev.FitFinished):
            self.state = "finished"
            self.finished_stages.update(STAGES)
            self.entries.append(f'<div class="ev ev-stage">Finished in {event.seconds:.1f} s · '
                                f'{event.lm_calls} LM calls</div>')

    def restart(self) -> None:
        """Start the clock now: the time spent waiting for the model is not the fit's."""
        self.started = time.perf_counter()

    def waiting_html(self, text: str) -> str:
        """The progress area while the run waits for the model (its load, or a free slot)."""
        return f'<div class="run-progress state-waiting"><div class="run-head"><span>{escape(text)}</span></div></div>'

    def note(self, text: str, state: str) -> None:
        self.state = state
        self.entries.append(f'<div class="ev ev-{state}">{escape(text)}</div>')

    def _step(self, stage: Stage) -> None:
        self.stage_done[stage] = self.stage_done.get(stage, 0) + 1

    def fraction(self, stage: Stage) -> float:
        if stage in self.finished_stages:
            return 1.0
        total = self.stage_total.get(stage)
        return min(self.stage_done.get(stage, 0) / total, 0.97) if total else 0.0

    def progress_html(self) -> str:
        elapsed = time.perf_counter() - self.started
        segments = []
        for stage in STAGES:
            active = " active" if stage == self.stage and stage not in self.finished_stages else ""
            segments.append(
                f'<div class="seg{active}"><div class="seg-label">{escape(stage.title)}</div>'
                f'<div class="seg-track"><div class="seg-fill" style="width:{100 * self.fraction(stage):.0f}%">'
                f'</div></div></div>')
        label = {"running": "Running", "finished": "Finished", "cancelled": "Cancelled", "failed": "Failed"}
        return (f'<div class="run-progress state-{self.state}"><div class="run-head">'
                f'<span>{label[self.state]}</span><span class="elapsed">{elapsed:.0f} s elapsed</span></div>'
                f'<div class="segs">{"".join(segments)}</div></div>')

    def log_html(self) -> str:
        return f'<div class="run-log">{"".join(reversed(self.entries))}</div>'


def _short(text: str, limit: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
