"""The PersonalRewardBench protocol: per-user splits, judging test pairs in both orderings, and the paper's methods.

Every method ends in the same thing, a personalized judge prompt (persona and/or demos) for
``synth.judge.PairwiseJudge``, so all of them are scored by one function and differ only in what they put in it:

| method | persona | demos |
|---|---|---|
| default | - | - |
| demographics | survey answers as text | - |
| memory | - | every context pair, label only |
| demos | - | step 1's best verified set (no persona) |
| personas | step 2's persona | - |
| synthesizeme | step 2's persona | step 3's best set |
| personas-distilled | step 2's persona, written by a given Θ | - |
| synthesizeme-distilled | step 2's persona, written by a given Θ | step 3's best set |

"demos" and "personas" are the ablations of one SynthesizeMe fit: step 1 of that fit *is* the demo search without a
persona, and its persona is what step 2 writes, so one fit per user serves all three (running them apart with the
same seed would repeat the same calls). The two "distilled" rows are the paper's "+ distilled Θ": the same fit with
a Θ made elsewhere (``optimize-theta`` with a larger model), given as ``MethodSettings.distilled_theta``
(``synth eval --theta``); one such fit per user serves both.
"""

from __future__ import annotations

import abc
import dataclasses
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import dspy

from synth.data import PreferencePair
from synth.judge import PairwiseJudge
from synth.metrics import Accuracy, accuracy_with_interval
from synth.pipeline import SynthesizeMe
from synth.signatures import TolerantChatAdapter
from synth.steps import LABELS_ONLY, Candidate, PairScore, StepRunner, StepSettings, Trace, score_pairs
from synth.theta import theta_id

DEFAULT_FRACTIONS = (0.5, 0.2, 0.3)
CONTEXT_SPLITS = {"train", "context"}
VALIDATION_SPLITS = {"val", "validation", "dev"}
TEST_SPLITS = {"test"}


# ---- splits -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UserSplit:
    user_id: str
    context: tuple[PreferencePair, ...]
    validation: tuple[PreferencePair, ...]
    test: tuple[PreferencePair, ...]
    demographics: str | None = None
    from_dataset: bool = False  # True when the dataset's own split column decided it

    def limit_context(self, n_context: int | None, seed: int = 0) -> UserSplit:
        """The first ``n_context`` of a fixed shuffle of the context: larger sizes contain the smaller ones."""
        if n_context is None or n_context >= len(self.context):
            return self
        order = list(self.context)
        random.Random(f"{seed}:{self.user_id}:context").shuffle(order)
        return dataclasses.replace(self, context=tuple(order[:n_context]))


def split_user(user_id: str, pairs: Sequence[PreferencePair], fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
               seed: int = 0, demographics: str | None = None, use_dataset_split: bool = True) -> UserSplit:
    """Context/validation/test for one user: the dataset's ``split`` column when every pair has a known value and
    all three parts are non-empty, else a seeded shuffle cut by ``fractions`` (each part keeps at least one pair)."""
    if use_dataset_split and pairs and all(_split_kind(p.split) for p in pairs):
        parts = {kind: tuple(p for p in pairs if _split_kind(p.split) == kind) for kind in ("context", "val", "test")}
        if all(parts.values()):
            return UserSplit(user_id, parts["context"], parts["val"], parts["test"], demographics, from_dataset=True)
    if len(pairs) < 3:
        raise ValueError(f"user {user_id}: {len(pairs)} pairs; the protocol needs at least 3 "
                         "(context, validation and test)")
    if abs(sum(fractions) - 1) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"split fractions must be positive and sum to 1, got {fractions}")
    order = list(pairs)
    random.Random(f"{seed}:{user_id}:split").shuffle(order)
    n = len(order)
    n_test = min(n - 2, max(1, round(n * fractions[2])))
    n_val = min(n - n_test - 1, max(1, round(n * fractions[1])))
    n_context = n - n_val - n_test
    return UserSplit(user_id, tuple(order[:n_context]), tuple(order[n_context:n_context + n_val]),
                     tuple(order[n_context + n_val:]), demographics)


def _split_kind(split: str | None) -> str | None:
    value = (split or "").lower()
    if value in CONTEXT_SPLITS:
        return "context"
    if value in VALIDATION_SPLITS:
        return "val"
    if value in TEST_SPLITS:
        return "test"
    return None


# ---- scoring ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JudgePrompt:
    """What a method puts into the judge: a persona, demos, or neither."""

    persona: str | None = None
    demos: tuple[dspy.Example, ...] = ()
    theta_id: str | None = None  # the Θ that wrote the persona, for methods built on a fit

    def to_dict(self) -> dict[str, Any]:
        return {"persona": self.persona, "demos": [dict(d.toDict()) for d in self.demos], "theta_id": self.theta_id}


def judge_test_pairs(prompt: JudgePrompt, test_pairs: Sequence[PreferencePair], lm: dspy.BaseLM,
                     reasoning_tokens: int = 256, max_turn_chars: int = 2000, num_threads: int = 8,
                     verdict_policy: str | None = None) -> list[PairScore]:
    """Judge every test pair in both orderings with the prompt's persona and demos."""
    program = PairwiseJudge(persona=prompt.persona or None, demos=prompt.demos, reasoning_tokens=reasoning_tokens,
                            verdict_policy=verdict_policy)
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        return score_pairs(program, test_pairs, max_turn_chars, num_threads)


def summarize_scores(scores: Sequence[float], seed: int = 0, n_resamples: int = 1000) -> Accuracy:
    """Mean over all pairs (pooled across users) with a 95% percentile bootstrap interval over pairs."""
    return accuracy_with_interval(list(scores), seed=seed, n_resamples=n_resamples)


# ---- methods ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodSettings:
    """What every method of a run is given: ``SynthesizeMe``'s parameters, resolved the same way (None: the default,
    or with ``quick`` the quick value; see ``StepSettings.resolve``), and ``num_threads`` LM calls per user."""

    quick: bool = False
    num_candidates: int | None = None
    max_demos: int | None = None
    max_labeled_demos: int = 4
    reasoning_tokens: int | None = None
    persona_tokens: int | None = None
    max_turn_chars: int = 2000
    num_threads: int = 8
    seed: int = 0
    theta: str | None = None
    verdict_policy: str | None = None
    tie_break: str = "confidence"
    stop_at_score: float | None = None
    distilled_theta: str | None = None  # the Θ of the "+ distilled Θ" rows

    def synthesizeme(self, lm: dspy.BaseLM) -> SynthesizeMe:
        """An unfitted SynthesizeMe with these parameters."""
        parameters = {k: v for k, v in dataclasses.asdict(self).items() if k != "distilled_theta"}
        return SynthesizeMe(lm=lm, **parameters)

    def distilled(self) -> MethodSettings:
        """These settings with the distilled Θ as the persona writer."""
        if not self.distilled_theta:
            raise ValueError("the distilled rows need a Θ file (synth eval --theta FILE)")
        return dataclasses.replace(self, theta=self.distilled_theta)

    def steps(self) -> StepSettings:
        """The resolved settings the methods judge and build demos with."""
        return StepSettings.resolve(self.quick, **{f.name: getattr(self, f.name)
                                                   for f in dataclasses.fields(StepSettings)})


class SynthesizeMeFits:
    """One SynthesizeMe fit per (user, context size), saved as an artifact and shared by the methods built on it.

    A fit found on disk is loaded instead of recomputed, so an interrupted run never repeats a finished fit.
    """

    def __init__(self, artifact_dir: str | Path | None):
        self.artifact_dir = Path(artifact_dir) if artifact_dir else None
        self._fits: dict[str, SynthesizeMe] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, split: UserSplit, key: str, lm: dspy.BaseLM, settings: MethodSettings) -> SynthesizeMe:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key in self._fits:
                return self._fits[key]
            path = self.artifact_dir / f"{key}.synthesizeme.json" if self.artifact_dir else None
            if path is not None and path.exists():
                model = SynthesizeMe.load(path, lm=lm)
            else:
                model = settings.synthesizeme(lm).fit(split.context, val_data=split.validation)
                if path is not None:
                    model.save(path)
            self._fits[key] = model
            return model

    def forget(self, key: str) -> None:
        """Drop a user's fit from memory once every method that needs it is recorded."""
        with self._guard:
            self._fits.pop(key, None)


class EvaluationMethod(abc.ABC):
    """A row of the paper's table: ``fit`` on a user's context + validation, then ``predict`` their test pairs."""

    name: ClassVar[str]
    title: ClassVar[str]
    uses_synthesizeme_fit: ClassVar[bool] = False
    distilled: ClassVar[bool] = False  # built on the fit whose persona the distilled Θ wrote

    def __init__(self, lm: dspy.BaseLM, settings: MethodSettings = MethodSettings(),
                 fits: SynthesizeMeFits | None = None):
        self.lm = lm
        self.settings = settings
        self.fits = fits or SynthesizeMeFits(None)
        self.prompt_: JudgePrompt | None = None

    @property
    def steps(self) -> StepSettings:
        """The resolved settings this method judges and builds demos with."""
        return self.settings.steps()

    def applies_to(self, split: UserSplit) -> bool:
        return True

    @abc.abstractmethod
    def _build_prompt(self, split: UserSplit, fit_key: str) -> JudgePrompt:
        """The persona/demos this method gives the judge for this user."""

    def fit(self, split: UserSplit, fit_key: str | None = None) -> EvaluationMethod:
        self.prompt_ = self._build_prompt(split, fit_key or split.user_id)
        return self

    def predict(self, test_pairs: Sequence[PreferencePair]) -> list[PairScore]:
        if self.prompt_ is None:
            raise RuntimeError("call fit() first")
        s = self.steps
        return judge_test_pairs(self.prompt_, test_pairs, self.lm, s.reasoning_tokens, s.max_turn_chars,
                                s.num_threads, s.verdict_policy)

    def _synthesizeme(self, split: UserSplit, fit_key: str) -> SynthesizeMe:
        if self.distilled:
            settings = self.settings.distilled()
            return self.fits.get(split, f"{fit_key}-{theta_id(settings.theta)}", self.lm, settings)
        return self.fits.get(split, fit_key, self.lm, self.settings)


class DefaultMethod(EvaluationMethod):
    """The non-personalized judge (``synth.pipeline.DefaultJudge``'s program: no persona, no demos)."""

    name, title = "default", "default judge"

    def _build_prompt(self, split, fit_key):
        return JudgePrompt()


class DemographicsMethod(EvaluationMethod):
    """The user's survey answers as the persona; only for datasets that have them (PRISM)."""

    name, title = "demographics", "demographics"

    def applies_to(self, split):
        return bool(split.demographics)

    def _build_prompt(self, split, fit_key):
        if not split.demographics:
            raise ValueError(f"user {split.user_id}: the dataset has no demographics for this user")
        return JudgePrompt(persona=split.demographics)


class MemoryMethod(EvaluationMethod):
    """Every context pair as a demo with its label and no reasoning; no LM call to fit."""

    name, title = "memory", "memory"

    def _build_prompt(self, split, fit_key):
        rng = random.Random(f"{self.steps.seed}:{split.user_id}:memory")
        positions = [rng.random() < 0.5 for _ in split.context]  # where the chosen reply is shown in each demo
        everything = Candidate("memory", 0, LABELS_ONLY, list(range(len(split.context))))
        runner = StepRunner(self.steps, lambda event: None, threading.Event())
        return JudgePrompt(demos=tuple(runner.demos_for(everything, [], split.context, positions)))


class JustDemosMethod(EvaluationMethod):
    """Step 1 only: verified bootstrapped demos chosen on validation, no persona."""

    name, title = "demos", "just demos"
    uses_synthesizeme_fit = True

    def _build_prompt(self, split, fit_key):
        artifact = self._synthesizeme(split, fit_key).artifact_
        traces = [Trace(**t) for t in artifact["traces"] if t["stage"] == "bootstrap"]
        candidates = {c["candidate_id"]: c for c in artifact["candidates"] if c["stage"] == "bootstrap"}
        best = Candidate(**candidates[artifact["chosen"]["bootstrap"]])
        train = [PreferencePair.from_dict(row) for row in artifact["pairs"]["train"]]
        shown_first = {t.pair_index: t.chosen_shown_first for t in traces}
        positions = [shown_first.get(i, True) for i in range(len(train))]
        runner = StepRunner(self.steps, lambda event: None, threading.Event())
        return JudgePrompt(demos=tuple(runner.demos_for(best, traces, train, positions)))


class JustPersonasMethod(EvaluationMethod):
    """Steps 1-2: the synthesized persona alone, no demos."""

    name, title = "personas", "just personas"
    uses_synthesizeme_fit = True

    def _build_prompt(self, split, fit_key):
        model = self._synthesizeme(split, fit_key)
        return JudgePrompt(persona=model.get_persona() or None, theta_id=model.artifact_.get("theta_id"))


class SynthesizeMeMethod(EvaluationMethod):
    """Personas + demos: the full method, ``synth.pipeline.SynthesizeMe``."""

    name, title = "synthesizeme", "personas + demos"
    uses_synthesizeme_fit = True

    def _build_prompt(self, split, fit_key):
        model = self._synthesizeme(split, fit_key)
        return JudgePrompt(persona=model.get_persona() or None, demos=tuple(model.demos_),
                           theta_id=model.artifact_.get("theta_id"))


class DistilledPersonasMethod(JustPersonasMethod):
    """The paper's "personas + distilled Θ": the persona written by a Θ made with another (larger) model."""

    name, title = "personas-distilled", "personas + distilled Θ"
    distilled = True


class DistilledSynthesizeMeMethod(SynthesizeMeMethod):
    """The paper's "personas + demos + distilled Θ"."""

    name, title = "synthesizeme-distilled", "personas + demos + distilled Θ"
    distilled = True


METHODS: dict[str, type[EvaluationMethod]] = {m.name: m for m in (
    DefaultMethod, DemographicsMethod, MemoryMethod, JustDemosMethod, JustPersonasMethod, SynthesizeMeMethod,
    DistilledPersonasMethod, DistilledSynthesizeMeMethod)}
PAPER_ORDER = ("default", "demographics", "memory", "demos", "personas", "synthesizeme", "personas-distilled",
               "synthesizeme-distilled")
DISTILLED = {"personas": "personas-distilled", "synthesizeme": "synthesizeme-distilled"}


def parse_methods(text: str, distilled_theta: str | None = None) -> list[str]:
    """``default,memory,...`` (or ``all``) -> method names in the paper's order; unknown names are an error. With a
    distilled Θ, ``personas`` and ``synthesizeme`` bring their "+ distilled Θ" rows; without one those rows are
    refused."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        names = [n for n in PAPER_ORDER if n not in DISTILLED.values()]
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown method(s) {unknown or text!r}; choose from {', '.join(PAPER_ORDER)} or all")
    if distilled_theta:
        names += [DISTILLED[n] for n in names if n in DISTILLED]
    elif any(n in DISTILLED.values() for n in names):
        raise ValueError("the distilled rows need a Θ file: synth eval --theta FILE")
    return [n for n in PAPER_ORDER if n in names]


def prompt_artifact(method: EvaluationMethod, split: UserSplit, extra: dict[str, Any]) -> dict[str, Any]:
    """A per-user, per-method record of what the judge was given and which pairs it was tested on."""
    return {"method": method.name, "user_id": split.user_id, **(method.prompt_.to_dict() if method.prompt_ else {}),
            "n_context": len(split.context), "n_validation": len(split.validation), "n_test": len(split.test),
            "test_pairs": [p.to_dict() for p in split.test], **extra}
