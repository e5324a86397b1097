"""The three verified steps of SynthesizeMe (paper, Sec. 3) and the pieces they share.

Step 1 and step 3 are the same search with a different judge: bootstrap reasoning on the training pairs, keep
the traces whose verdict matches the user's real choice, build candidate demo sets, score every candidate on
the validation pairs in both orderings, keep the best. Step 2 writes the persona from the winning reasoning.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import dspy

from synth.data import PreferencePair, render_conversation, truncate_middle
from synth.events import CandidateScored, Event, PersonaReady, Stage, StageFinished, StageStarted, TraceBootstrapped
from synth.judge import Judgment, PairwiseJudge, judgment_of, p_correct
from synth.parallel import run_concurrently
from synth.signatures import VERDICTS
from synth.theta import PersonaWriter

ZERO_SHOT, LABELS_ONLY, BOOTSTRAPPED = "zero-shot", "labels-only", "bootstrapped"
# What ``quick`` changes: a smaller search and shorter texts, for a fit in minutes on a CPU.
QUICK = {"num_candidates": 3, "max_demos": 2, "reasoning_tokens": 48, "persona_tokens": 120}


@dataclass(frozen=True)
class StepSettings:
    """The resolved settings of one fit (``quick`` and defaults already applied); recorded in the artifact."""

    num_candidates: int = 10
    max_demos: int = 4
    reasoning_tokens: int = 256
    persona_tokens: int = 320
    max_turn_chars: int = 2000
    num_threads: int = 16
    seed: int = 0

    @classmethod
    def resolve(cls, quick: bool = False, **values: int | None) -> StepSettings:
        """The defaults, replaced by ``QUICK``'s when ``quick``, replaced by every value given that is not None.

        A value passed explicitly always wins over ``quick``: ``quick`` only fills in what the caller left unset.
        """
        chosen = {**(QUICK if quick else {}), **{name: value for name, value in values.items() if value is not None}}
        return cls(**chosen)


@dataclass(frozen=True)
class Trace:
    """One bootstrapped reasoning trace on a training pair, with the verification outcome."""

    stage: str
    pair_index: int
    chosen_shown_first: bool
    reasoning: str
    verdict: str
    user_choice: str
    kept: bool
    p_first: float | None
    verdict_source: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Candidate:
    """A demo set tried on validation; ``trace_ids`` index the stage's traces (labels-only: pair indices)."""

    stage: str
    candidate_id: int
    kind: str
    trace_ids: list[int]
    accuracy: float = float("nan")
    mean_p_correct: float | None = None
    per_pair_scores: list[float] = field(default_factory=list)
    verdict_fallbacks: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def rank_key(self) -> tuple[float, float, int]:
        """Best accuracy; ties go to the more confident candidate, then to the earlier one."""
        return (self.accuracy, self.mean_p_correct or 0.0, -self.candidate_id)


def judge_inputs(pair: PreferencePair, chosen_first: bool, max_turn_chars: int) -> dict[str, str]:
    chosen = truncate_middle(pair.chosen.content, max_turn_chars)
    rejected = truncate_middle(pair.rejected.content, max_turn_chars)
    first, second = (chosen, rejected) if chosen_first else (rejected, chosen)
    return {"conversation": render_conversation(pair.context, max_turn_chars), "first_reply": first,
            "second_reply": second}


def user_choice(chosen_first: bool) -> str:
    return VERDICTS[0] if chosen_first else VERDICTS[1]


def judge_pair(judge: PairwiseJudge, pair: PreferencePair, chosen_first: bool, max_turn_chars: int) -> Judgment:
    """One judgment of a pair, with the user's chosen reply shown first or second."""
    return judgment_of(judge(**judge_inputs(pair, chosen_first, max_turn_chars)))


def judge_both_orders(judge: PairwiseJudge, pair: PreferencePair, max_turn_chars: int) -> tuple[Judgment, Judgment]:
    """The pair judged with the chosen reply shown first, then shown second (one call after the other)."""
    return judge_pair(judge, pair, True, max_turn_chars), judge_pair(judge, pair, False, max_turn_chars)


@dataclass(frozen=True)
class PairScore:
    """One held-out pair judged in both orderings."""

    correct_chosen_first: bool
    correct_chosen_second: bool
    p_correct_chosen_first: float
    p_correct_chosen_second: float
    verdict_fallbacks: int = 0

    @classmethod
    def of(cls, chosen_first: Judgment, chosen_second: Judgment) -> PairScore:
        """Score the two judgments of one pair: chosen reply shown first, then shown second."""
        return cls(chosen_first.preferred == user_choice(True), chosen_second.preferred == user_choice(False),
                   p_correct(chosen_first, user_choice(True)), p_correct(chosen_second, user_choice(False)),
                   chosen_first.is_fallback + chosen_second.is_fallback)

    @property
    def score(self) -> float:
        """0, 0.5 or 1: each ordering the judge gets right counts half."""
        return (self.correct_chosen_first + self.correct_chosen_second) / 2

    @property
    def p_correct(self) -> float:
        """The probability put on the chosen reply, averaged over both orderings (position bias cancels)."""
        return (self.p_correct_chosen_first + self.p_correct_chosen_second) / 2

    def to_dict(self) -> dict:
        return asdict(self)


def score_pairs(judge: PairwiseJudge, pairs: Sequence[PreferencePair], max_turn_chars: int, num_threads: int
                ) -> list[PairScore]:
    """Judge every pair in both orderings, concurrently, in the caller's DSPy context."""
    jobs = [(i, chosen_first) for i in range(len(pairs)) for chosen_first in (True, False)]

    def run(job: tuple[int, bool]) -> Judgment:
        index, chosen_first = job
        return judge_pair(judge, pairs[index], chosen_first, max_turn_chars)

    results = {jobs[k]: judgment for k, judgment in run_concurrently(run, jobs, num_threads)}
    return [PairScore.of(results[(index, True)], results[(index, False)]) for index in range(len(pairs))]


def traces_for_persona(traces: Sequence[Trace], best: Candidate) -> list[Trace]:
    """What step 2 reads: the winning set's reasoning; else every kept trace; else the bare choices (no unverified
    reasoning)."""
    if best.kind == BOOTSTRAPPED:
        return [traces[i] for i in best.trace_ids]
    kept = [t for t in traces if t.kept]
    return kept or [replace(t, reasoning="") for t in traces]


class StepRunner:
    """Runs the steps for one fit: owns its settings, its event sink and its cancel flag."""

    def __init__(self, settings: StepSettings, emit: Callable[[Event], None], cancel: threading.Event):
        self.settings = settings
        self.emit = emit
        self.cancel = cancel

    def _judge(self, persona: str | None, demos: Sequence[dspy.Example] = ()) -> PairwiseJudge:
        return PairwiseJudge(persona=persona, demos=demos, reasoning_tokens=self.settings.reasoning_tokens)

    # ---- steps 1 and 3 --------------------------------------------------------------------------------------
    def search(self, stage: Stage, persona: str | None, train: Sequence[PreferencePair],
               validation: Sequence[PreferencePair], rng: random.Random
               ) -> tuple[list[Trace], list[Candidate], Candidate]:
        """Bootstrap, verify, build candidates, score them on validation; return traces, candidates, best."""
        started = time.perf_counter()
        positions = [rng.random() < 0.5 for _ in train]  # where the chosen reply is shown, per training pair
        n_candidates_max = 2 + self.settings.num_candidates
        self.emit(StageStarted(stage, total_steps=len(train) + n_candidates_max))
        traces = self.bootstrap(stage, persona, train, positions)
        candidates = self.make_candidates(stage, traces, rng)
        best = self.score(stage, persona, candidates, traces, train, positions, validation)
        self.emit(StageFinished(stage, time.perf_counter() - started))
        return traces, candidates, best

    def bootstrap(self, stage: Stage, persona: str | None, train: Sequence[PreferencePair],
                  positions: Sequence[bool]) -> list[Trace]:
        judge = self._judge(persona)
        max_chars = self.settings.max_turn_chars

        def run(index: int) -> Judgment:
            return judge_pair(judge, train[index], positions[index], max_chars)

        traces: list[Trace | None] = [None] * len(train)
        for index, judgment in run_concurrently(run, list(range(len(train))), self.settings.num_threads, self.cancel):
            expected = user_choice(positions[index])
            trace = Trace(stage.value, index, positions[index], judgment.reasoning, judgment.preferred, expected,
                          kept=judgment.preferred == expected, p_first=judgment.p_first,
                          verdict_source=judgment.source)
            traces[index] = trace
            self.emit(TraceBootstrapped(stage, index, train[index].prompt, trace.reasoning, trace.verdict,
                                        trace.user_choice, trace.kept, trace.p_first))
        return [t for t in traces if t is not None]

    def make_candidates(self, stage: Stage, traces: Sequence[Trace], rng: random.Random) -> list[Candidate]:
        """Zero-shot, labels-only, then up to n distinct random subsets of the kept traces."""
        max_demos = self.settings.max_demos
        pair_ids = [t.pair_index for t in traces]
        labels = sorted(rng.sample(pair_ids, min(max_demos, len(pair_ids))))
        candidates = [Candidate(stage.value, 0, ZERO_SHOT, []), Candidate(stage.value, 1, LABELS_ONLY, labels)]
        kept = [i for i, t in enumerate(traces) if t.kept]
        seen: set[tuple[int, ...]] = set()
        attempts = 0
        while kept and len(candidates) < 2 + self.settings.num_candidates and attempts < 20 * max(1, max_demos):
            attempts += 1
            size = rng.randint(1, min(max_demos, len(kept)))
            subset = rng.sample(kept, size)
            if tuple(sorted(subset)) in seen:
                continue
            seen.add(tuple(sorted(subset)))
            candidates.append(Candidate(stage.value, len(candidates), BOOTSTRAPPED, subset))
        return candidates

    def demos_for(self, candidate: Candidate, traces: Sequence[Trace], train: Sequence[PreferencePair],
                  positions: Sequence[bool]) -> list[dspy.Example]:
        max_chars = self.settings.max_turn_chars
        if candidate.kind == LABELS_ONLY:
            return [dspy.Example(**judge_inputs(train[i], positions[i], max_chars), preferred=user_choice(positions[i]))
                    for i in candidate.trace_ids]
        demos = []
        for trace_id in candidate.trace_ids:
            trace = traces[trace_id]
            pair = train[trace.pair_index]
            demos.append(dspy.Example(**judge_inputs(pair, trace.chosen_shown_first, max_chars),
                                      reasoning=trace.reasoning, preferred=trace.user_choice))
        return demos

    def score(self, stage: Stage, persona: str | None, candidates: Sequence[Candidate], traces: Sequence[Trace],
              train: Sequence[PreferencePair], positions: Sequence[bool],
              validation: Sequence[PreferencePair]) -> Candidate:
        """Every (candidate, validation pair, ordering) judged concurrently; a candidate is reported as it ends."""
        judges = [self._judge(persona, self.demos_for(c, traces, train, positions)) for c in candidates]
        jobs = [(c, v, chosen_first) for c in range(len(candidates)) for v in range(len(validation))
                for chosen_first in (True, False)]
        max_chars = self.settings.max_turn_chars

        def run(job: tuple[int, int, bool]) -> Judgment:
            c, v, chosen_first = job
            return judge_pair(judges[c], validation[v], chosen_first, max_chars)

        remaining = [2 * len(validation)] * len(candidates)
        results: list[dict[tuple[int, bool], Judgment]] = [{} for _ in candidates]
        best: Candidate | None = None
        for index, judgment in run_concurrently(run, jobs, self.settings.num_threads, self.cancel):
            c, v, chosen_first = jobs[index]
            results[c][(v, chosen_first)] = judgment
            remaining[c] -= 1
            if remaining[c] == 0:
                self._finish_candidate(candidates[c], results[c], len(validation))
                if best is None or candidates[c].rank_key > best.rank_key:
                    best = candidates[c]
                self.emit(CandidateScored(stage, candidates[c].candidate_id, candidates[c].kind,
                                          len(candidates[c].trace_ids), candidates[c].accuracy,
                                          candidates[c].mean_p_correct, best is candidates[c]))
        # Report order depends on timing; the winner must not.
        return max(candidates, key=lambda c: c.rank_key)

    @staticmethod
    def _finish_candidate(candidate: Candidate, results: dict[tuple[int, bool], Judgment], n_pairs: int) -> None:
        scores = [PairScore.of(results[(v, True)], results[(v, False)]) for v in range(n_pairs)]
        confidences = [p for s in scores for p in (s.p_correct_chosen_first, s.p_correct_chosen_second)]
        candidate.per_pair_scores = [s.score for s in scores]
        candidate.accuracy = sum(candidate.per_pair_scores) / n_pairs
        candidate.mean_p_correct = sum(confidences) / len(confidences)
        candidate.verdict_fallbacks = sum(s.verdict_fallbacks for s in scores)

    # ---- step 2 ---------------------------------------------------------------------------------------------
    def write_persona(self, writer: PersonaWriter, notes: str) -> str:
        started = time.perf_counter()
        self.emit(StageStarted(Stage.PERSONA, total_steps=1))
        config = {"max_tokens": self.settings.persona_tokens}
        persona = (writer(preference_notes=notes, config=config).persona or "").strip()
        if not persona:  # an empty answer gets one fresh sample before we settle for no persona
            persona = (writer(preference_notes=notes, config={**config, "rollout_id": 1, "temperature": 1.0}).persona
                       or "").strip()
        self.emit(PersonaReady(persona))
        self.emit(StageFinished(Stage.PERSONA, time.perf_counter() - started))
        return persona

    def preference_notes(self, traces: Sequence[Trace], train: Sequence[PreferencePair]) -> str:
        """The validated reasoning, one block per choice, as Θ reads it."""
        blocks = []
        for number, trace in enumerate(traces, start=1):
            pair = train[trace.pair_index]
            lines = [f"Choice {number}", f"Request: {truncate_middle(pair.prompt, 600)}",
                     f"Picked: {truncate_middle(pair.chosen.content, 400)}",
                     f"Over: {truncate_middle(pair.rejected.content, 400)}"]
            if trace.reasoning:
                lines.append(f"Why: {trace.reasoning}")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)
