"""synth.evaluation.context_scaling: accuracy against context size, with a fitted slope."""

from __future__ import annotations

import pytest

from synth.evaluation.context_scaling import fit_slope, run_context_scaling, scaling_analysis
from synth.evaluation.datasets import EvalDataset
from synth.evaluation.protocol import MethodSettings
from synth.evaluation.runner import RunConfig
from tests.scripted import make_population, scripted_lm


def test_slope_recovers_a_known_line_with_a_p_value():
    xs = [k for k in range(1, 11) for _ in range(20)]
    ys = [0.53 + 0.008 * x + (0.05 if i % 2 else -0.05) for i, x in enumerate(xs)]
    fit = fit_slope(xs, ys)
    assert fit.slope == pytest.approx(0.008, abs=1e-3) and fit.intercept == pytest.approx(0.53, abs=0.01)
    assert fit.p_value < 1e-6 and fit.n_points == 200
    flat = fit_slope([1, 1, 2, 2, 3, 3], [0.5, 0.6, 0.6, 0.5, 0.5, 0.6])
    assert flat.p_value > 0.5
    with pytest.raises(ValueError, match="2 context sizes"):
        fit_slope([1, 1, 1], [0, 1, 0])


def test_scaling_points_pool_pairs_per_size():
    records = [{"model": "m", "method": "synthesizeme", "n_context": k, "scores": [1.0] * k + [0.0] * (4 - k)}
               for k in (1, 2, 3) for _ in range(2)]
    points, fits = scaling_analysis(records)
    assert [(p.n_context, p.accuracy, p.n_users, p.n_pairs) for p in points] == [
        (1, 0.25, 2, 8), (2, 0.5, 2, 8), (3, 0.75, 2, 8)]
    assert fits[("m", "synthesizeme")].slope == pytest.approx(0.25)


def test_context_scaling_run_writes_figure_and_fit(tmp_path):
    dataset = EvalDataset.from_pairs(make_population(2, 12), "scripted")
    lm, _ = scripted_lm()
    outcome = run_context_scaling(dataset, lm, tmp_path, RunConfig(methods=("memory",),
                                                                   settings=MethodSettings(num_threads=2)),
                                  sizes=[1, 3, 6, 50], model_label="scripted", progress=False)
    assert sorted({p.n_context for p in outcome.points}) == [1, 3, 6]  # 50 is more context than any user has
    assert ("scripted", "memory") in outcome.fits
    html = outcome.outputs["figure"].read_text()
    assert "plotly" in html.lower() and "context pairs" in html
    assert "% accuracy per context pair" in outcome.outputs["summary"].read_text()
