"""The three verified steps of SynthesizeMe (paper, Sec. 3) and the pieces they share.

Step 1 and step 3 are the same search with a different judge: bootstrap reasoning on the training pairs, keep
the traces whose verdict the model gave itself and that match the user's real choice, build candidate demo sets
(zero-shot, labels only, every verified trace, and ``num_candidates`` random subsets of size 1..len(train)), score
every candidate on the validation pairs in both orderings, keep the best. Step 2 writes the persona from the winning
reasoning. Where each choice comes from (paper, official library, this project) is in docs/fidelity.md.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import dspy

from synth.data import PreferencePair, render_conversation, truncate_middle
from synth.events import CandidateScored, Event, PersonaReady, Stage, StageFinished, StageStarted, TraceBootstrapped
from synth.judge import VERDICT_POLICIES, Judgment, PairwiseJudge, judgment_of, p_correct
from synth.lm.budget import PromptBudget, PromptTooLong, cap_pieces, prompt_budget
from synth.parallel import run_concurrently
from synth.signatures import VERDICTS, TolerantChatAdapter
from synth.theta import PersonaWriter

ZERO_SHOT, LABELS_ONLY, ALL_VERIFIED, BOOTSTRAPPED = "zero-shot", "labels-only", "all-verified", "bootstrapped"
WITH_REASONING = (ALL_VERIFIED, BOOTSTRAPPED)  # candidates whose demos are verified traces
TIE_BREAKS = ("confidence", "first")
# What ``quick`` changes: a smaller search and shorter texts, for a fit in minutes on a CPU.
QUICK = {"num_candidates": 3, "max_demos": 2, "reasoning_tokens": 48, "persona_tokens": 120}


@dataclass(frozen=True)
class StepSettings:
    """The resolved settings of one fit (``quick`` and defaults already applied); recorded in the artifact.

    ``max_demos`` None: no cap, the token budget alone keeps prompts inside the model's context. ``verdict_policy``
    None: the LM's default (``synth.judge``). ``tie_break`` "confidence": equal validation accuracy goes to the
    candidate with the higher mean probability on the right answers, then the earlier one; "first": the earlier
    one (the official rule). ``stop_at_score`` (a fraction, 0.8 = the official 80): the search takes the best
    candidate up to the first one that reaches it.
    """

    num_candidates: int = 10
    max_demos: int | None = None
    max_labeled_demos: int = 4
    reasoning_tokens: int = 256
    persona_tokens: int = 320
    max_turn_chars: int = 2000
    num_threads: int = 16
    seed: int = 0
    verdict_policy: str | None = None
    tie_break: str = "confidence"
    stop_at_score: float | None = None

    def __post_init__(self) -> None:
        minimum = {"num_candidates": 0, "max_labeled_demos": 0, "reasoning_tokens": 1, "persona_tokens": 1,
                   "max_turn_chars": 0, "num_threads": 1}
        for name, least in minimum.items():
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be at least {least}, got {getattr(self, name)}")
        if self.max_demos is not None and self.max_demos < 1:
            raise ValueError(f"max_demos must be at least 1 (or None for no cap), got {self.max_demos}")
        if self.verdict_policy is not None and self.verdict_policy not in VERDICT_POLICIES:
            raise ValueError(f"verdict_policy must be one of {', '.join(VERDICT_POLICIES)}, "
                             f"got {self.verdict_policy!r}")
        if self.tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break must be one of {', '.join(TIE_BREAKS)}, got {self.tie_break!r}")
        if self.stop_at_score is not None and not 0 < self.stop_at_score <= 1:
            raise ValueError(f"stop_at_score is a fraction of validation accuracy in (0, 1] (the official 80.0 is "
                             f"0.8), got {self.stop_at_score}")

    @classmethod
    def resolve(cls, quick: bool = False, **values) -> StepSettings:
        """The defaults, replaced by ``QUICK``'s when ``quick``, replaced by every value given that is not None.

        A value passed explicitly always wins over ``quick``: ``quick`` only fills in what the caller left unset.
        """
        chosen = {**(QUICK if quick else {}), **{name: value for name, value in values.items() if value is not None}}
        return cls(**chosen)


@dataclass(frozen=True)
class Trace:
    """One bootstrapped reasoning trace on a training pair, with the verification outcome: ``kept`` only when the
    model gave the verdict itself (``verdict_source`` probabilities or parsed) and it matches the user's choice."""

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
    """A demo set tried on validation; ``trace_ids`` index the stage's traces (labels-only: pair indices), in rank
    order (the first is the last to be left out of a prompt that does not fit)."""

    stage: str
    candidate_id: int
    kind: str
    trace_ids: list[int]
    accuracy: float = float("nan")
    mean_p_correct: float | None = None
    per_pair_scores: list[float] = field(default_factory=list)
    verdict_fallbacks: int = 0
    verdict_sources: dict[str, int] = field(default_factory=dict)
    prompts_fitted: int = 0  # validation calls that left demos out or cut the pair to fit the context

    def to_dict(self) -> dict:
        return asdict(self)


def selection_key(candidate: Candidate, tie_break: str) -> tuple:
    """Higher is better: accuracy, then (``confidence``) mean P(correct), then the earlier candidate."""
    if tie_break == "first":
        return candidate.accuracy, -candidate.candidate_id
    return candidate.accuracy, candidate.mean_p_correct or 0.0, -candidate.candidate_id


def select_best(candidates: Sequence[Candidate], tie_break: str, stop_at_score: float | None) -> Candidate:
    """The winner among scored candidates, taken in candidate order up to the first that reaches ``stop_at_score``."""
    ordered = sorted(candidates, key=lambda c: c.candidate_id)
    if stop_at_score is not None:
        reached = next((i for i, c in enumerate(ordered) if c.accuracy >= stop_at_score), len(ordered) - 1)
        ordered = ordered[: reached + 1]
    return max(ordered, key=lambda c: selection_key(c, tie_break))


def judge_inputs(pair: PreferencePair, chosen_first: bool, max_turn_chars: int) -> dict[str, str]:
    chosen = truncate_middle(pair.chosen.content, max_turn_chars)
    rejected = truncate_middle(pair.rejected.content, max_turn_chars)
    first, second = (chosen, rejected) if chosen_first else (rejected, chosen)
    return {"conversation": render_conversation(pair.context, max_turn_chars), "first_reply": first,
            "second_reply": second}


def user_choice(chosen_first: bool) -> str:
    return VERDICTS[0] if chosen_first else VERDICTS[1]


def shown_first(pairs: Sequence[PreferencePair], rng: random.Random) -> list[bool]:
    """Where each pair's chosen reply is shown to the judge: the row's ``flip`` when it has one (the official
    column), else a seeded coin (drawn for every pair, so a ``flip`` column changes no other pair's side)."""
    coins = [rng.random() < 0.5 for _ in pairs]
    return [coin if pair.flip is None else pair.flip for pair, coin in zip(pairs, coins, strict=True)]


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
    verdict_sources: tuple[str, ...] = ()

    @classmethod
    def of(cls, chosen_first: Judgment, chosen_second: Judgment) -> PairScore:
        """Score the two judgments of one pair: chosen reply shown first, then shown second. A tie is wrong."""
        return cls(chosen_first.preferred == user_choice(True), chosen_second.preferred == user_choice(False),
                   p_correct(chosen_first, user_choice(True)), p_correct(chosen_second, user_choice(False)),
                   chosen_first.is_fallback + chosen_second.is_fallback, (chosen_first.source, chosen_second.source))

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
    if best.kind in WITH_REASONING:
        return [traces[i] for i in best.trace_ids]
    kept = [t for t in traces if t.kept]
    return kept or [replace(t, reasoning="") for t in traces]


def persona_notes(traces: Sequence[Trace], train: Sequence[PreferencePair], budget: PromptBudget,
                  max_tokens: int) -> str:
    """What Θ reads: for each choice the whole conversation, the chosen and the other reply, and the verified
    reasoning, within ``max_tokens``. Long texts are cut in the middle by tokens, the longest first; only when
    even short cuts cannot fit are the last choices left out."""
    blocks = [_note_parts(number, trace, train[trace.pair_index]) for number, trace in enumerate(traces, start=1)]
    while blocks:
        pieces = [text for block in blocks for _, text in block]
        skeleton = _join_notes([[(label, "") for label, _ in block] for block in blocks])
        try:
            cut = iter(cap_pieces(budget, pieces, max_tokens - budget.count_text(skeleton)))
        except PromptTooLong:
            blocks = blocks[:-1]
            continue
        return _join_notes([[(label, next(cut)) for label, _ in block] for block in blocks])
    return ""


def _note_parts(number: int, trace: Trace, pair: PreferencePair) -> list[tuple[str, str]]:
    names = {"user": "User", "assistant": "Assistant", "model": "Assistant", "system": "System"}
    parts = [(f"Choice {number}\nConversation:\n{names.get(turn.role, turn.role)}: " if i == 0 else
              f"\n{names.get(turn.role, turn.role)}: ", turn.content) for i, turn in enumerate(pair.context)]
    parts += [("\nChosen reply: ", pair.chosen.content), ("\nOther reply: ", pair.rejected.content)]
    if trace.reasoning:
        parts.append(("\nReasoning that predicted this choice: ", trace.reasoning))
    return parts


def _join_notes(blocks: Sequence[Sequence[tuple[str, str]]]) -> str:
    return "\n\n".join("".join(label + text for label, text in block) for block in blocks)


class StepRunner:
    """Runs the steps for one fit: owns its settings, its event sink and its cancel flag."""

    def __init__(self, settings: StepSettings, emit: Callable[[Event], None], cancel: threading.Event):
        self.settings = settings
        self.emit = emit
        self.cancel = cancel

    def _judge(self, persona: str | None, demos: Sequence[dspy.Example] = ()) -> PairwiseJudge:
        return PairwiseJudge(persona=persona, demos=demos, reasoning_tokens=self.settings.reasoning_tokens,
                             verdict_policy=self.settings.verdict_policy)

    # ---- steps 1 and 3 --------------------------------------------------------------------------------------
    def search(self, stage: Stage, persona: str | None, train: Sequence[PreferencePair],
               validation: Sequence[PreferencePair], rng: random.Random
               ) -> tuple[list[Trace], list[Candidate], Candidate]:
        """Bootstrap, verify, build candidates, score them on validation; return traces, candidates, best."""
        started = time.perf_counter()
        positions = shown_first(train, rng)
        n_candidates_max = 3 + self.settings.num_candidates
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
                          kept=judgment.is_verified and judgment.preferred == expected, p_first=judgment.p_first,
                          verdict_source=judgment.source)
            traces[index] = trace
            self.emit(TraceBootstrapped(stage, index, train[index].prompt, trace.reasoning, trace.verdict,
                                        trace.user_choice, trace.kept, trace.p_first, trace.verdict_source))
        return [t for t in traces if t is not None]

    def make_candidates(self, stage: Stage, traces: Sequence[Trace], rng: random.Random) -> list[Candidate]:
        """Zero-shot, labels-only, every verified trace in training order, then ``num_candidates`` random draws:
        the training pairs shuffled, a size drawn from 1..``max_demos`` (default: the number of pairs), and the
        first verified traces of the shuffle up to that size. A draw that repeats an earlier set is not scored
        again (it would score the same and could not win)."""
        cap = self.settings.max_demos or len(traces)
        n_labels = min(self.settings.max_labeled_demos, cap, len(traces))
        candidates = [Candidate(stage.value, 0, ZERO_SHOT, [])]
        if n_labels:
            labels = sorted(rng.sample(range(len(traces)), n_labels))
            candidates.append(Candidate(stage.value, len(candidates), LABELS_ONLY, labels))
        kept = [i for i, t in enumerate(traces) if t.kept]
        seen: set[tuple[int, ...]] = set()
        if kept:
            candidates.append(Candidate(stage.value, len(candidates), ALL_VERIFIED, kept[:cap]))
            seen.add(tuple(kept[:cap]))
        for _ in range(self.settings.num_candidates):
            order = list(range(len(traces)))
            rng.shuffle(order)
            size = rng.randint(1, max(1, cap))
            subset = [i for i in order if traces[i].kept][:size]
            if subset and tuple(subset) not in seen:
                seen.add(tuple(subset))
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

        def run(job: tuple[int, int, bool]) -> dspy.Prediction:
            c, v, chosen_first = job
            return judges[c](**judge_inputs(validation[v], chosen_first, max_chars))

        remaining = [2 * len(validation)] * len(candidates)
        results: list[dict[tuple[int, bool], dspy.Prediction]] = [{} for _ in candidates]
        best: Candidate | None = None
        tie_break = self.settings.tie_break
        for index, prediction in run_concurrently(run, jobs, self.settings.num_threads, self.cancel):
            c, v, chosen_first = jobs[index]
            results[c][(v, chosen_first)] = prediction
            remaining[c] -= 1
            if remaining[c] == 0:
                candidate = candidates[c]
                self._finish_candidate(candidate, results[c], len(validation))
                if best is None or selection_key(candidate, tie_break) > selection_key(best, tie_break):
                    best = candidate
                self.emit(CandidateScored(stage, candidate.candidate_id, candidate.kind, len(candidate.trace_ids),
                                          candidate.accuracy, candidate.mean_p_correct, best is candidate))
        # Report order depends on timing; the winner must not.
        return select_best(candidates, tie_break, self.settings.stop_at_score)

    @staticmethod
    def _finish_candidate(candidate: Candidate, results: dict[tuple[int, bool], dspy.Prediction],
                          n_pairs: int) -> None:
        scores = [PairScore.of(judgment_of(results[(v, True)]), judgment_of(results[(v, False)]))
                  for v in range(n_pairs)]
        confidences = [p for s in scores for p in (s.p_correct_chosen_first, s.p_correct_chosen_second)]
        candidate.per_pair_scores = [s.score for s in scores]
        candidate.accuracy = sum(candidate.per_pair_scores) / n_pairs
        candidate.mean_p_correct = sum(confidences) / len(confidences)
        candidate.verdict_fallbacks = sum(s.verdict_fallbacks for s in scores)
        candidate.verdict_sources = dict(Counter(source for s in scores for source in s.verdict_sources))
        candidate.prompts_fitted = sum(bool(p.demos_dropped or p.inputs_cut) for p in results.values())

    # ---- step 2 ---------------------------------------------------------------------------------------------
    def persona_answer_tokens(self) -> int:
        """What Θ may write: its reasoning, then the persona."""
        return self.settings.reasoning_tokens + self.settings.persona_tokens

    def notes_budget(self, writer: PersonaWriter) -> tuple[PromptBudget, int]:
        """The LM's budget, and how many tokens the notes may take beside Θ's instructions and its answer (Θ's own
        demos give way to the notes: they are dropped first when a call does not fit)."""
        lm = dspy.settings.lm
        budget = prompt_budget(lm)
        adapter = dspy.settings.adapter or TolerantChatAdapter()
        frame = budget.count(adapter.format(writer.predictor.signature, [], {"preference_notes": ""}))
        return budget, budget.room(self.persona_answer_tokens()) - frame - 16

    def write_persona(self, writer: PersonaWriter, notes: str) -> str:
        started = time.perf_counter()
        self.emit(StageStarted(Stage.PERSONA, total_steps=1))
        budgets = {"reasoning_tokens": self.settings.reasoning_tokens, "persona_tokens": self.settings.persona_tokens}
        persona = (writer(preference_notes=notes, **budgets).persona or "").strip()
        if not persona:  # an empty answer gets one fresh sample before we settle for no persona
            persona = (writer(preference_notes=notes, config={"rollout_id": 1, "temperature": 1.0}, **budgets).persona
                       or "").strip()
        self.emit(PersonaReady(persona))
        self.emit(StageFinished(Stage.PERSONA, time.perf_counter() - started))
        return persona

    def preference_notes(self, writer: PersonaWriter, traces: Sequence[Trace], train: Sequence[PreferencePair]
                         ) -> str:
        """The notes Θ reads (:func:`persona_notes`), sized for this LM and this Θ."""
        budget, room = self.notes_budget(writer)
        return persona_notes(traces, train, budget, room)

