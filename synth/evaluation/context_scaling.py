""""More context helps": accuracy against the number of context pairs a method is given.

Each user's context is shuffled once (seeded) and cut to each size, so a larger size contains the smaller ones;
validation and test stay fixed. The slope is a least-squares line through every (context size, test-pair score)
point, the same pooling as the accuracy table, with scipy's p-value for a zero slope. The paper reports
y = 53.22 + 0.78x (percent, p = 2.4e-11) for Llama 3.3 70B on PRISM.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dspy

from synth.data import atomic_write_text
from synth.evaluation.datasets import EvalDataset
from synth.evaluation.protocol import METHODS, summarize_scores
from synth.evaluation.runner import RunConfig, csv_text, run_evaluation

DEFAULT_SIZES = (1, 2, 3, 5, 8, 12)


@dataclass(frozen=True)
class SlopeFit:
    """``accuracy ≈ intercept + slope × n_context``, both as fractions (× 100 for percent)."""

    slope: float
    intercept: float
    p_value: float
    r_value: float
    stderr: float
    n_points: int

    def describe(self) -> str:
        return (f"y = {100 * self.intercept:.2f} + {100 * self.slope:.2f}x (% accuracy per context pair, "
                f"p = {self.p_value:.2g}, n = {self.n_points})")


@dataclass(frozen=True)
class ScalingPoint:
    model: str
    method: str
    n_context: int
    accuracy: float
    ci_low: float
    ci_high: float
    n_users: int
    n_pairs: int


def fit_slope(n_context: Sequence[float], scores: Sequence[float]) -> SlopeFit:
    """Least-squares line with a two-sided p-value (scipy.stats.linregress)."""
    from scipy import stats

    if len(n_context) != len(scores):
        raise ValueError("n_context and scores differ in length")
    if len(set(n_context)) < 2 or len(scores) < 3:
        raise ValueError("a slope needs at least 3 points over at least 2 context sizes")
    result = stats.linregress(list(map(float, n_context)), list(map(float, scores)))
    return SlopeFit(float(result.slope), float(result.intercept), float(result.pvalue), float(result.rvalue),
                    float(result.stderr), len(scores))


def scaling_analysis(records: Sequence[dict[str, Any]], seed: int = 0
                     ) -> tuple[list[ScalingPoint], dict[tuple[str, str], SlopeFit]]:
    """Points (mean per context size) and one fitted slope per (model, method)."""
    by_size: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_size[(record["model"], record["method"], int(record["n_context"]))].append(record)
    points = []
    for (model, method, size), group in sorted(by_size.items()):
        scores = [s for r in group for s in r["scores"]]
        accuracy = summarize_scores(scores, seed=seed)
        points.append(ScalingPoint(model, method, size, accuracy.accuracy, accuracy.ci_low, accuracy.ci_high,
                                   len(group), len(scores)))
    fits = {}
    for model, method in sorted({(p.model, p.method) for p in points}):
        xs, ys = [], []
        for record in records:
            if record["model"] == model and record["method"] == method:
                xs += [record["n_context"]] * len(record["scores"])
                ys += record["scores"]
        if len(set(xs)) >= 2 and len(ys) >= 3:
            fits[(model, method)] = fit_slope(xs, ys)
    return points, fits


def scaling_figure(points: Sequence[ScalingPoint], fits: dict[tuple[str, str], SlopeFit]):
    """Accuracy (%) against context pairs: means with 95% intervals and each fitted line."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for model, method in sorted({(p.model, p.method) for p in points}):
        series = [p for p in points if p.model == model and p.method == method]
        name = f"{METHODS[method].title} ({model})"
        figure.add_trace(go.Scatter(
            x=[p.n_context for p in series], y=[100 * p.accuracy for p in series], mode="markers", name=name,
            error_y={"type": "data", "symmetric": False, "array": [100 * (p.ci_high - p.accuracy) for p in series],
                     "arrayminus": [100 * (p.accuracy - p.ci_low) for p in series]},
            customdata=[[p.n_users, p.n_pairs] for p in series],
            hovertemplate="%{x} context pairs: %{y:.1f}%<br>%{customdata[0]} users, %{customdata[1]} pairs"))
        fit = fits.get((model, method))
        if fit is not None:
            xs = [min(p.n_context for p in series), max(p.n_context for p in series)]
            figure.add_trace(go.Scatter(x=xs, y=[100 * (fit.intercept + fit.slope * x) for x in xs], mode="lines",
                                        name=f"fit: {fit.describe()}", line={"dash": "dash"}))
    figure.add_hline(y=50, line={"color": "gray", "dash": "dot"}, annotation_text="random")
    figure.update_layout(title="Accuracy vs number of context preferences", xaxis_title="context pairs",
                         yaxis_title="accuracy (%, both orderings)", template="plotly_white")
    return figure


@dataclass
class ScalingOutcome:
    points: list[ScalingPoint]
    fits: dict[tuple[str, str], SlopeFit]
    outputs: dict[str, Path]


def run_context_scaling(dataset: EvalDataset, lm: dspy.BaseLM | None, out_dir: str | Path, config: RunConfig,
                        sizes: Sequence[int] = DEFAULT_SIZES, model_label: str | None = None,
                        lm_spec: dict[str, Any] | None = None, progress: bool = True) -> ScalingOutcome:
    """Run the methods at each context size (resumable like ``run_evaluation``) and write scaling.csv/.md/.html."""
    if not sizes or min(sizes) < 1:
        raise ValueError(f"context sizes must be positive integers, got {list(sizes)}")
    config = dataclasses.replace(config, context_sizes=tuple(sorted({int(s) for s in sizes})))
    outcome = run_evaluation(dataset, lm, out_dir, config, model_label=model_label, lm_spec=lm_spec,
                             progress=progress)
    records = [r for r in outcome.records if r["n_context_limit"] != "all"]
    points, fits = scaling_analysis(records, seed=config.bootstrap_seed)
    out = Path(out_dir)
    outputs = {"points": out / "scaling.csv", "summary": out / "scaling.md", "figure": out / "scaling.html"}
    atomic_write_text(outputs["points"], csv_text(list(ScalingPoint.__dataclass_fields__),
                                                  [dataclasses.asdict(p) for p in points]))
    summary = ["| method | model | fit |", "|---|---|---|"]
    summary += [f"| {METHODS[method].title} | {model} | {fit.describe()} |" for (model, method), fit in fits.items()]
    atomic_write_text(outputs["summary"], "\n".join(summary) + "\n")
    html = scaling_figure(points, fits).to_html(include_plotlyjs=True, full_html=True)
    atomic_write_text(outputs["figure"], html)
    return ScalingOutcome(points, fits, outputs)
