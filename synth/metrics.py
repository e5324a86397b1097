"""Accuracy in both orderings with a 95% bootstrap interval, the paper's evaluation protocol."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Accuracy:
    """Mean of per-pair scores (each pair judged in both orderings: 0, 0.5 or 1) with a bootstrap CI.

    ``per_pair_scores`` are the items; ``results`` the judgments in the official library's order (every pair with the
    chosen reply first, then every pair reversed; 1 right, 0 wrong or tie). ``result["mean"]``,
    ``["lower_bound"]``, ``["upper_bound"]`` and ``["results"]`` read like the official ``evaluate``'s dict.
    """

    accuracy: float
    ci_low: float
    ci_high: float
    n_pairs: int
    n_judgments: int
    verdict_fallbacks: int = 0
    per_pair_scores: tuple[float, ...] = ()
    results: tuple[int, ...] = ()

    @property
    def mean(self) -> float:
        return self.accuracy

    @property
    def lower_bound(self) -> float:
        return self.ci_low

    @property
    def upper_bound(self) -> float:
        return self.ci_high

    def __getitem__(self, key: str):
        if key not in OFFICIAL_KEYS:
            raise KeyError(f"{key!r}; an Accuracy reads like the official result with {', '.join(OFFICIAL_KEYS)}")
        return list(self.results) if key == "results" else getattr(self, key)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{100 * self.accuracy:.1f}% (95% CI {100 * self.ci_low:.1f}-{100 * self.ci_high:.1f}, "
                f"{self.n_pairs} pairs x 2 orderings)")


OFFICIAL_KEYS = ("mean", "lower_bound", "upper_bound", "results")


def bootstrap_interval(scores: Sequence[float], n_resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap over pairs (resampling pairs keeps both orderings of a pair together)."""
    values = np.asarray(scores, dtype=float)
    if values.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def accuracy_with_interval(per_pair_scores: Sequence[float], *, verdict_fallbacks: int = 0, n_resamples: int = 1000,
                           seed: int = 0, results: Sequence[int] = ()) -> Accuracy:
    low, high = bootstrap_interval(per_pair_scores, n_resamples=n_resamples, seed=seed)
    mean = float(np.mean(per_pair_scores)) if len(per_pair_scores) else float("nan")
    return Accuracy(mean, low, high, len(per_pair_scores), 2 * len(per_pair_scores), verdict_fallbacks,
                    tuple(float(s) for s in per_pair_scores), tuple(int(r) for r in results))
