"""Persona fidelity against stated preferences, the paper's check that personas say something true about a person.

PRISM's participants wrote, before any conversation, what they want from an AI (their ``system_string``, and slider
ratings of eight behaviours; ``synth.evaluation.datasets.stated_preferences_text``). For each such user, the judge is
given their SynthesizeMe persona (the same fit the ``personas`` and ``synthesizeme`` methods use) and asked which of
two statements of preferences the user would choose: their own, or a random other user's (drawn with the run's seed).
The two statements are shown in both orders, so position bias cancels.

The unit of the test is a user: the judge picked the user's own statement when its probability for it, averaged over
both orders, is above one half (with a remote model, the hard verdicts averaged: right in both orders), the other
user's when below, a tie when exactly one half (one order each, i.e. position bias alone). Ties are left out, as in a
sign test, and a two-sided binomial test asks whether the share of "own" differs from 50%. The share over single
orderings, the number the paper reports, is given as well; its orderings are not independent, so it gets no p-value.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dspy
from scipy.stats import binomtest

from synth.data import PreferencePair, Turn, atomic_write_text
from synth.evaluation.datasets import STATED_PREFERENCES_FIELD, EvalDataset
from synth.evaluation.protocol import JudgePrompt, judge_test_pairs
from synth.evaluation.runner import (
    ALL_CONTEXT,
    Ledger,
    RunConfig,
    SynthesizeMeFits,
    _progress_bar,
    csv_text,
    fit_key,
    user_splits,
)
from synth.fidelity import wilson_interval
from synth.parallel import run_concurrently
from synth.steps import PairScore

METHOD_NAME = "persona-fidelity"
LEDGER_NAME = "persona_fidelity_ledger.jsonl"
# What the judge sees as the conversation; the two "replies" are the two statements of preferences.
QUESTION = ("Before we start: in your own words, what do you want from an AI assistant? How should it behave, and "
            "what matters most to you in its answers?")
OWN, OTHER, TIE = "own", "other", "tie"


def split_methods(text: str) -> tuple[str, bool]:
    """``--methods`` text -> the per-user methods' part, and whether this check was named in it."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    rest = [name for name in names if name.lower() != METHOD_NAME]
    return ",".join(rest), len(rest) != len(names)


def no_stated_preferences_message(dataset: EvalDataset) -> str:
    return (f"{dataset.name}: no user has stated preferences, so {METHOD_NAME} cannot run. It needs PRISM's survey "
            "(a raw PRISM folder with survey.jsonl, or HannahRoseKirk/prism-alignment) or a per-row "
            f"'{STATED_PREFERENCES_FIELD}' text field")


def check_dataset(dataset: EvalDataset, n_users: int | None = None) -> None:
    """Refuse, before any model work, a dataset on which the check cannot run."""
    users = dataset.head(n_users).users
    if not any(user.stated_preferences for user in users):
        raise ValueError(no_stated_preferences_message(dataset))
    if len(pair_with_foils({u.user_id: u.stated_preferences or "" for u in users})) == 0:
        raise ValueError(f"{dataset.name}: {METHOD_NAME} needs at least two users with different stated preferences")


def pair_with_foils(stated: Mapping[str, str], seed: int = 0) -> dict[str, str]:
    """Each user with stated preferences -> a random other user whose stated preferences differ from theirs.

    Drawn per user from ``seed`` and the user id, so a user's foil does not depend on the order users come in."""
    texts = {user: text.strip() for user, text in stated.items() if text and text.strip()}
    users = sorted(texts)
    foils = {}
    for user in users:
        others = [other for other in users if other != user and texts[other] != texts[user]]
        if others:
            foils[user] = random.Random(f"{seed}:{user}:foil").choice(others)
    return foils


def stated_preference_pair(user_id: str, own: str, foil: str) -> PreferencePair:
    """The trial as a preference pair: the user's own statement is the one they would choose."""
    return PreferencePair(context=(Turn("user", QUESTION),), chosen=Turn("assistant", own.strip()),
                          rejected=Turn("assistant", foil.strip()), user_id=user_id)


def outcome_of(score: PairScore) -> str:
    """``own``, ``other`` or ``tie`` from the judge's probability for the user's own statement, both orders."""
    if score.p_correct > 0.5:
        return OWN
    return OTHER if score.p_correct < 0.5 else TIE


@dataclass(frozen=True)
class FidelitySummary:
    """One model's result: how often the judge picked users' own stated preferences, and whether that is chance."""

    model: str
    n_users: int  # users judged (ties included)
    own: int
    other: int
    ties: int
    share: float | None  # own / (own + other)
    ci_low: float | None  # Wilson 95% interval of share
    ci_high: float | None
    p_value: float | None  # two-sided binomial test of own out of own + other against 1/2
    ordering_share: float | None  # right answers over single orderings (the paper's figure), ties count half
    skipped_no_persona: int = 0


def summarize_outcomes(model: str, outcomes: Sequence[str], ordering_scores: Sequence[float] = (),
                       skipped_no_persona: int = 0) -> FidelitySummary:
    """The share of ``own`` among decided users with its Wilson interval and binomial p-value."""
    own, other = outcomes.count(OWN), outcomes.count(OTHER)
    decided = own + other
    low_high = wilson_interval(own, decided) if decided else (None, None)
    p_value = float(binomtest(own, decided, 0.5, alternative="two-sided").pvalue) if decided else None
    ordering_share = sum(ordering_scores) / len(ordering_scores) if ordering_scores else None
    return FidelitySummary(model, len(outcomes), own, other, outcomes.count(TIE), own / decided if decided else None,
                           *low_high, p_value, ordering_share, skipped_no_persona)


def summarize_records(records: Iterable[dict[str, Any]]) -> list[FidelitySummary]:
    """One summary per model from ledger records."""
    by_model: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_model.setdefault(record["model"], []).append(record)
    summaries = []
    for model, group in sorted(by_model.items()):
        judged = [r for r in group if r["outcome"] is not None]
        summaries.append(summarize_outcomes(model, [r["outcome"] for r in judged], [r["score"] for r in judged],
                                            skipped_no_persona=len(group) - len(judged)))
    return summaries


def markdown_report(summaries: Sequence[FidelitySummary]) -> str:
    lines = ["| model | users | own | other | ties | share of own (95% CI) | p (binomial, vs 50%) | single orderings |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        share = "–" if s.share is None else f"{100 * s.share:.1f}% ({100 * s.ci_low:.1f}–{100 * s.ci_high:.1f})"
        p_value = "–" if s.p_value is None else f"{s.p_value:.3g}"
        ordering = "–" if s.ordering_share is None else f"{100 * s.ordering_share:.1f}%"
        lines.append(f"| {s.model} | {s.n_users} | {s.own} | {s.other} | {s.ties} | {share} | {p_value} | {ordering} |")
    skipped = sum(s.skipped_no_persona for s in summaries)
    note = f" {skipped} users had no persona and were not judged." if skipped else ""
    return ("\n".join(lines) + "\n\nGiven a user's persona, how often the judge picked the user's own stated "
            "preferences over a random other user's (both orders; a tie is one order each and is left out of the "
            f"share and the test).{note} See docs/persona_fidelity.md.\n")


@dataclass
class FidelityOutcome:
    out_dir: Path
    records: list[dict[str, Any]]
    computed: int
    summaries: list[FidelitySummary]
    skipped_users: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)


def run_persona_fidelity(dataset: EvalDataset, lm: dspy.BaseLM, out_dir: str | Path, config: RunConfig,
                         model_label: str | None = None, progress: bool = True) -> FidelityOutcome:
    """Judge every user with stated preferences against a random other user's, resuming from ``out_dir``.

    Personas come from the run's SynthesizeMe fits (``out_dir/artifacts``; a fit the other methods already saved is
    loaded, not redone). Results go to ``persona_fidelity_ledger.jsonl`` (what rerunning resumes from),
    ``persona_fidelity.csv`` and ``persona_fidelity.md`` (per model: share, interval, n, p-value) and
    ``persona_fidelity_users.csv`` (one row per user)."""
    check_dataset(dataset, config.n_users)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model_label is None:
        from synth.lm import describe

        model_label = describe(lm).name
    users = dataset.head(config.n_users).users
    stated = {user.user_id: user.stated_preferences or "" for user in users}
    foils = pair_with_foils(stated, config.settings.seed)
    splits, skipped = user_splits(dataset, config)
    skipped += [f"user {u.user_id}: no stated preferences" for u in users if not (u.stated_preferences or "").strip()]
    ledger = Ledger(out_dir / LEDGER_NAME)
    done = ledger.done()
    pending = [s for s in splits
               if s.user_id in foils and (model_label, s.user_id, METHOD_NAME, ALL_CONTEXT) not in done]
    fits = SynthesizeMeFits(out_dir / "artifacts")
    steps = config.settings.steps()

    def judge_user(split) -> None:
        started = time.perf_counter()
        key = fit_key(model_label, split.user_id, None)
        persona = fits.get(split, key, lm, config.settings).get_persona().strip()
        fits.forget(key)
        foil = foils[split.user_id]
        record: dict[str, Any] = {"model": model_label, "user_id": split.user_id, "method": METHOD_NAME,
                                  "n_context_limit": ALL_CONTEXT, "foil_user_id": foil, "persona": persona,
                                  "own": stated[split.user_id].strip(), "foil": stated[foil].strip(),
                                  "outcome": None, "score": None, "p_own": None}
        if persona:
            pair = stated_preference_pair(split.user_id, stated[split.user_id], stated[foil])
            score = judge_test_pairs(JudgePrompt(persona=persona), [pair], lm, steps.reasoning_tokens,
                                     steps.max_turn_chars, num_threads=2)[0]
            record.update(outcome=outcome_of(score), score=score.score, p_own=score.p_correct,
                          verdict_fallbacks=score.verdict_fallbacks, judgments=asdict(score))
        record["seconds"] = round(time.perf_counter() - started, 3)
        ledger.append(record)

    bar = _progress_bar(len(pending), dataset.name, f"{model_label} · {METHOD_NAME}", enabled=progress)
    try:
        for _ in run_concurrently(judge_user, pending, config.user_threads):
            bar.update(1)
    finally:
        bar.close()
    records = ledger.records()
    outcome = FidelityOutcome(out_dir, records, len(pending), summarize_records(records), skipped)
    outcome.outputs = write_reports(outcome.summaries, records, out_dir)
    return outcome


def write_reports(summaries: Sequence[FidelitySummary], records: Sequence[dict[str, Any]], out_dir: Path
                  ) -> dict[str, Path]:
    """The summaries as Markdown and CSV, and one CSV row per user; each file written whole."""
    outputs = {"fidelity_table": out_dir / "persona_fidelity.md", "fidelity_results": out_dir / "persona_fidelity.csv",
               "fidelity_users": out_dir / "persona_fidelity_users.csv"}
    atomic_write_text(outputs["fidelity_table"], markdown_report(summaries))
    atomic_write_text(outputs["fidelity_results"], csv_text(list(FidelitySummary.__dataclass_fields__),
                                                            [asdict(s) for s in summaries]))
    user_fields = ["model", "user_id", "foil_user_id", "outcome", "p_own", "score", "verdict_fallbacks", "seconds"]
    atomic_write_text(outputs["fidelity_users"], csv_text(user_fields, records))
    return outputs
