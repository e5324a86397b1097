"""SynthesizeMe and DefaultJudge: estimators in the scikit-learn style (parameters in ``__init__``, ``fit``,
``predict_*``, ``evaluate``) that mirror the official library's API and add events, probabilities and artifacts."""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import json
import queue
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dspy

from synth.data import PreferencePair, Turn, atomic_write_text, split_train_validation
from synth.events import DemosChosen, Event, EventCallback, FitFinished, Stage
from synth.judge import PairwiseJudge, judgment_of
from synth.lm import build_lm, configure_cache, fit_threads
from synth.metrics import Accuracy, accuracy_with_interval
from synth.signatures import PERSONA_HEADER, VERDICTS, TolerantChatAdapter
from synth.steps import BOOTSTRAPPED, Candidate, StepRunner, StepSettings, Trace, judge_inputs, score_pairs
from synth.theta import load_theta

ARTIFACT_FORMAT = "synthesizeme-studio/1"
QUICK = {"num_candidates": 3, "max_demos": 2, "reasoning_tokens": 48, "persona_tokens": 120}
PLACEHOLDERS = {"conversation": "{conversation}", "first_reply": "{first_reply}", "second_reply": "{second_reply}"}

_cache_configured = threading.Lock()
_cache_ready = False


def _ensure_cache(cache_dir: str | None) -> None:
    """DSPy's cache is process-wide: configure it once, on the first fit."""
    global _cache_ready
    with _cache_configured:
        if not _cache_ready:
            configure_cache(cache_dir)
            _cache_ready = True


def as_context(context: str | Sequence[Turn] | Sequence[dict[str, str]]) -> tuple[Turn, ...]:
    if isinstance(context, str):
        return (Turn("user", context),)
    return tuple(t if isinstance(t, Turn) else Turn(t["role"], t["content"]) for t in context)


def as_completion(text: str | dict[str, str] | Turn) -> Turn:
    if isinstance(text, Turn):
        return text
    if isinstance(text, dict):
        return Turn(text.get("role", "assistant"), text["content"])
    return Turn("assistant", text)


class _PairwiseEstimator(abc.ABC):
    """Shared prediction and evaluation over a judge program (persona + demos, or neither)."""

    def __init__(self, lm: dspy.BaseLM | None = None, reasoning_tokens: int = 256, max_turn_chars: int = 2000,
                 num_threads: int | None = None, seed: int = 0, cache_dir: str | None = None):
        self.lm = lm
        self.reasoning_tokens = reasoning_tokens
        self.max_turn_chars = max_turn_chars
        self.num_threads = num_threads
        self.seed = seed
        self.cache_dir = cache_dir

    @abc.abstractmethod
    def _program(self) -> PairwiseJudge:
        """The judge program this estimator predicts with."""

    def _context(self):
        _ensure_cache(getattr(self, "cache_dir", None))
        return dspy.context(lm=self._lm(), adapter=TolerantChatAdapter())

    def _lm(self) -> dspy.BaseLM:
        if self.lm is None:
            self.lm = build_lm()
        return self.lm

    def _threads(self) -> int:
        """Concurrent LM calls: ``num_threads``, or by default what suits the LM (see ``synth.lm.fit_threads``)."""
        return self.num_threads or fit_threads(self._lm())

    def _judge_both_orders(self, pair: PreferencePair):
        program = self._program()
        with self._context():
            return [judgment_of(program(**judge_inputs(pair, chosen_first, self.max_turn_chars)))
                    for chosen_first in (True, False)]

    def predict_proba(self, context, completion_a, completion_b) -> float:
        """P(a is preferred over b), averaged over both orderings to cancel position bias."""
        pair = PreferencePair(as_context(context), as_completion(completion_a), as_completion(completion_b))
        a_first, a_second = self._judge_both_orders(pair)
        p_a_first = a_first.p_first if a_first.p_first is not None else float(a_first.preferred == VERDICTS[0])
        p_a_second = 1 - a_second.p_first if a_second.p_first is not None else float(a_second.preferred == VERDICTS[1])
        return (p_a_first + p_a_second) / 2

    def predict_pairwise(self, context, completion_a, completion_b) -> int:
        """+1 if a is preferred, -1 if b is (ties in probability go to a)."""
        return 1 if self.predict_proba(context, completion_a, completion_b) >= 0.5 else -1

    def evaluate(self, test_pairs: Sequence[PreferencePair], n_resamples: int = 1000) -> Accuracy:
        """Accuracy on held-out pairs in both orderings, with a 95% bootstrap interval over pairs."""
        with self._context():
            scores = score_pairs(self._program(), test_pairs, self.max_turn_chars, self._threads())
        return accuracy_with_interval([s.score for s in scores], n_resamples=n_resamples, seed=self.seed,
                                      verdict_fallbacks=sum(s.verdict_fallbacks for s in scores))

    def get_llm_judge_prompt(self, context=None, completion_a: str | None = None,
                             completion_b: str | None = None) -> list[dict[str, str]]:
        """Portable chat messages (system, demo turns, the pair) for any chat LLM; with no pair given, the pair's
        fields are ``{conversation}``-style slots."""
        program = self._program()
        inputs = dict(PLACEHOLDERS)
        if context is not None and completion_a is not None and completion_b is not None:
            pair = PreferencePair(as_context(context), as_completion(completion_a), as_completion(completion_b))
            inputs = judge_inputs(pair, True, self.max_turn_chars)
        return TolerantChatAdapter().format(program.reason.predict.signature, program.demos, inputs)


class DefaultJudge(_PairwiseEstimator):
    """The non-personalized baseline: the same judge with no persona and no demos."""

    def fit(self, pairs: Sequence[PreferencePair] = (), **_: Any) -> DefaultJudge:
        """Nothing to learn; present so the baseline drops in wherever SynthesizeMe does."""
        return self

    def _program(self) -> PairwiseJudge:
        return PairwiseJudge(reasoning_tokens=self.reasoning_tokens)


class SynthesizeMe(_PairwiseEstimator):
    """Fit a personalized judge (persona + demos) from one user's preference pairs.

    >>> model = SynthesizeMe(lm=build_lm("offline"), quick=True).fit(pairs)
    >>> model.get_persona(), model.predict_proba(context, a, b), model.evaluate(test_pairs)
    """

    def __init__(self, lm: dspy.BaseLM | None = None, num_candidates: int = 10, max_demos: int = 4, seed: int = 0,
                 theta: str | Path | None = None, validation_fraction: float = 0.3, reasoning_tokens: int = 256,
                 persona_tokens: int = 320, max_turn_chars: int = 2000, num_threads: int | None = None,
                 quick: bool = False, cache_dir: str | None = None):
        settings = {"num_candidates": num_candidates, "max_demos": max_demos, "reasoning_tokens": reasoning_tokens,
                    "persona_tokens": persona_tokens}
        if quick:
            settings.update(QUICK)
        super().__init__(lm=lm, reasoning_tokens=settings["reasoning_tokens"], max_turn_chars=max_turn_chars,
                         num_threads=num_threads, seed=seed, cache_dir=cache_dir)
        self.quick = quick
        self.num_candidates = settings["num_candidates"]
        self.max_demos = settings["max_demos"]
        self.persona_tokens = settings["persona_tokens"]
        self.theta = theta
        self.validation_fraction = validation_fraction
        self.persona_: str | None = None
        self.demos_: list[dspy.Example] = []
        self.artifact_: dict[str, Any] | None = None

    # ---- fitting ---------------------------------------------------------------------------------------------
    def fit(self, pairs: Sequence[PreferencePair], val_pairs: Sequence[PreferencePair] | None = None,
            callback: EventCallback | None = None, cancel: threading.Event | None = None) -> SynthesizeMe:
        """Run the three steps. ``callback`` receives every event; ``cancel`` stops the fit early."""
        self._fit(pairs, val_pairs, callback or (lambda event: None), cancel or threading.Event())
        return self

    def fit_events(self, pairs: Sequence[PreferencePair], val_pairs: Sequence[PreferencePair] | None = None,
                   cancel: threading.Event | None = None) -> Iterator[Event]:
        """Run ``fit`` in a worker thread and yield its events as they happen; closing the iterator cancels."""
        cancel = cancel or threading.Event()
        events: queue.Queue = queue.Queue()
        done = object()
        failure: list[BaseException] = []

        def work():
            try:
                self._fit(pairs, val_pairs, events.put, cancel)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                failure.append(exc)
            finally:
                events.put(done)

        worker = threading.Thread(target=work, name="synthesizeme-fit", daemon=True)
        worker.start()
        try:
            while (event := events.get()) is not done:
                yield event
        finally:
            cancel.set()
            worker.join()
        if failure:  # FitCancelled included: a caller that cancelled from outside learns the fit stopped
            raise failure[0]

    def _settings(self) -> StepSettings:
        return StepSettings(num_candidates=self.num_candidates, max_demos=self.max_demos,
                            reasoning_tokens=self.reasoning_tokens, persona_tokens=self.persona_tokens,
                            max_turn_chars=self.max_turn_chars, num_threads=self._threads(), seed=self.seed)

    def _fit(self, pairs, val_pairs, emit: EventCallback, cancel: threading.Event) -> None:
        pairs = list(pairs)
        train, validation = (pairs, list(val_pairs)) if val_pairs else split_train_validation(
            pairs, self.validation_fraction)
        if not train or not validation:
            raise ValueError("fit needs at least one training and one validation pair")
        writer, theta_id = load_theta(self.theta)
        settings = self._settings()
        lock = threading.Lock()

        def safe_emit(event: Event) -> None:
            with lock:
                emit(event)

        runner = StepRunner(settings, safe_emit, cancel)
        rng = random.Random(self.seed)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        base_lm = self._lm()
        fit_lm = base_lm.copy()  # its own history: usage of this fit is counted apart from concurrent fits
        _ensure_cache(self.cache_dir)
        with dspy.context(lm=fit_lm, adapter=TolerantChatAdapter()):
            mark = time.perf_counter()
            traces1, candidates1, best1 = runner.search(Stage.BOOTSTRAP, None, train, validation, rng)
            timings["bootstrap"] = time.perf_counter() - mark

            mark = time.perf_counter()
            note_traces = self._traces_for_persona(traces1, best1)
            persona = runner.write_persona(writer, runner.preference_notes(note_traces, train))
            timings["persona"] = time.perf_counter() - mark

            mark = time.perf_counter()
            traces3, candidates3, best3 = runner.search(Stage.DEMOS, persona or None, train, validation, rng)
            timings["demos"] = time.perf_counter() - mark

        positions = {t.pair_index: t.chosen_shown_first for t in traces3}
        ordered_positions = [positions.get(i, True) for i in range(len(train))]
        demos = runner.demos_for(best3, traces3, train, ordered_positions)
        self.persona_, self.demos_ = persona, demos
        timings["total"] = time.perf_counter() - started
        usage = _usage(fit_lm)
        fallbacks = sum(t.verdict_source == "fallback" for t in traces1 + traces3) + sum(
            c.verdict_fallbacks for c in candidates1 + candidates3)
        safe_emit(DemosChosen(best3.candidate_id, len(demos), best3.accuracy))
        self.artifact_ = self._artifact(train, validation, traces1 + traces3, candidates1 + candidates3, best1, best3,
                                        theta_id, timings, usage, fallbacks, writer)
        safe_emit(FitFinished(timings["total"], best3.accuracy, usage["lm_calls"], fallbacks,
                              summary={"persona": persona, "n_demos": len(demos),
                                       "default_validation_accuracy": candidates1[0].accuracy}))

    @staticmethod
    def _traces_for_persona(traces: Sequence[Trace], best: Candidate) -> list[Trace]:
        """The winning set's reasoning; else every kept trace; else the bare choices (no unverified reasoning)."""
        if best.kind == BOOTSTRAPPED:
            return [traces[i] for i in best.trace_ids]
        kept = [t for t in traces if t.kept]
        return kept or [dataclasses.replace(t, reasoning="") for t in traces]

    def _artifact(self, train, validation, traces, candidates, best1, best3, theta_id, timings, usage, fallbacks,
                  writer) -> dict[str, Any]:
        lm = self._lm()
        return {
            "format": ARTIFACT_FORMAT,
            "persona": self.persona_,
            "demos": [dict(d.toDict()) for d in self.demos_],
            "traces": [t.to_dict() for t in traces],
            "candidates": [c.to_dict() for c in candidates],
            "chosen": {"bootstrap": best1.candidate_id, "demos": best3.candidate_id},
            "validation_accuracy": best3.accuracy,
            "default_validation_accuracy": next(c.accuracy for c in candidates if c.stage == "bootstrap"
                                                and c.candidate_id == 0),
            "theta_id": theta_id,
            "theta_instructions": writer.write.signature.instructions,
            "model": lm.model,
            "config": {**dataclasses.asdict(self._settings()), "validation_fraction": self.validation_fraction,
                       "quick": self.quick},
            "timings": timings,
            "lm_usage": usage,
            "verdict_fallbacks": fallbacks,
            "pairs": {"train": [p.to_dict() for p in train], "validation": [p.to_dict() for p in validation]},
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }

    # ---- results ---------------------------------------------------------------------------------------------
    def _require_fit(self) -> None:
        if self.persona_ is None:
            raise RuntimeError("call fit() or load() first")

    def _program(self) -> PairwiseJudge:
        self._require_fit()
        return PairwiseJudge(persona=self.persona_ or None, demos=self.demos_, reasoning_tokens=self.reasoning_tokens)

    def get_persona(self) -> str:
        self._require_fit()
        return self.persona_

    def get_demos(self) -> list[dict[str, Any]]:
        self._require_fit()
        return [dict(d.toDict()) for d in self.demos_]

    def get_generation_prompt(self) -> str:
        """A system prompt that asks any LLM to write replies this person would prefer."""
        self._require_fit()
        lines = ["Write replies for one particular person. Match what they value in content, tone, length and "
                 "structure, as described below, while staying accurate and helpful.", "", PERSONA_HEADER,
                 self.persona_ or "(no persona could be written from the available choices)"]
        liked = [d for d in self.demos_ if d.get("preferred") in VERDICTS]
        if liked:
            lines += ["", "Replies this person chose over an alternative:"]
            for number, demo in enumerate(liked, start=1):
                reply = demo["first_reply"] if demo["preferred"] == VERDICTS[0] else demo["second_reply"]
                lines += [f"Example {number}", f"Conversation: {demo['conversation']}", f"Chosen reply: {reply}", ""]
        return "\n".join(lines).rstrip() + "\n"

    def save(self, path: str | Path) -> None:
        """One JSON artifact: persona, demos, every trace, candidate scores, Θ id, model, config, timings."""
        self._require_fit()
        atomic_write_text(path, json.dumps(self.artifact_, ensure_ascii=False, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path, lm: dspy.BaseLM | None = None) -> SynthesizeMe:
        path = Path(path)
        try:
            artifact = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable SynthesizeMe artifact ({exc})") from None
        return cls.from_artifact(artifact, lm=lm, source=str(path))

    @classmethod
    def from_artifact(cls, artifact: dict[str, Any], lm: dspy.BaseLM | None = None,
                      source: str = "<artifact>") -> SynthesizeMe:
        for key in ("persona", "demos", "config"):
            if key not in artifact:
                raise ValueError(f"{source}: field '{key}' missing; not a SynthesizeMe artifact")
        config = artifact["config"]
        model = cls(lm=lm, **{k: config[k] for k in ("num_candidates", "max_demos", "seed", "reasoning_tokens",
                                                     "persona_tokens", "max_turn_chars", "num_threads")
                              if k in config})
        model.persona_ = artifact["persona"] or ""
        demo_fields = ("conversation", "first_reply", "second_reply")
        model.demos_ = [dspy.Example(**d).with_inputs(*demo_fields) for d in artifact["demos"]]
        model.artifact_ = artifact
        return model


def _usage(lm: dspy.BaseLM) -> dict[str, int]:
    calls = prompt_tokens = completion_tokens = 0
    for entry in lm.history:
        calls += 1
        usage = entry.get("usage") or {}
        prompt_tokens += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
        completion_tokens += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    return {"lm_calls": calls, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
