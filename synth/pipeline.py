"""SynthesizeMe and DefaultJudge: estimators in the scikit-learn style (parameters in ``__init__``, ``fit``,
``predict_*``, ``evaluate``) that mirror the official library's API and add events, probabilities and artifacts."""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import inspect
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
from synth.judge import PairwiseJudge
from synth.lm import build_lm, configure_cache, fit_threads
from synth.metrics import Accuracy, accuracy_with_interval
from synth.signatures import PERSONA_HEADER, VERDICTS, TolerantChatAdapter
from synth.steps import (
    PairScore,
    StepRunner,
    StepSettings,
    judge_both_orders,
    judge_inputs,
    score_pairs,
    traces_for_persona,
)
from synth.theta import load_theta

ARTIFACT_FORMAT = "synthesizeme-studio/1"
PLACEHOLDERS = {"conversation": "{conversation}", "first_reply": "{first_reply}", "second_reply": "{second_reply}"}

_response_cache_lock = threading.Lock()
_response_cache_ready = False


def _ensure_response_cache() -> None:
    """DSPy's response cache is process-wide: point it under synth's cache folder (``$SYNTH_CACHE_DIR/dspy``)
    once, on first use."""
    global _response_cache_ready
    with _response_cache_lock:
        if not _response_cache_ready:
            configure_cache()
            _response_cache_ready = True


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
    """Shared prediction and evaluation over a judge program (persona + demos, or neither), and scikit-learn's
    parameter protocol: the parameters are the ``__init__`` arguments, stored unchanged."""

    lm: dspy.BaseLM | None
    num_threads: int | None
    seed: int

    # ---- scikit-learn's parameter protocol ----------------------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return sorted(name for name, p in signature.parameters.items()
                      if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters as given (``deep`` also lists those of parameters that have any)."""
        params = {}
        for name in self._param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                params.update((f"{name}__{key}", item) for key, item in value.get_params().items())
            params[name] = value
        return params

    def set_params(self, **params: Any) -> _PairwiseEstimator:
        """Change parameters (``name__sub`` reaches into a parameter that has its own ``set_params``); a fitted
        model keeps what it learned until it is fitted again."""
        valid = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {', '.join(valid)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __sklearn_clone__(self) -> _PairwiseEstimator:
        """An unfitted copy with the same parameters for ``sklearn.base.clone``. The LM is shared, not deep-copied:
        it is a client that may hold a loaded model and its engine."""
        return type(self)(**self.get_params(deep=False))

    # ---- the LM and the judge -------------------------------------------------------------------------------------
    def _lm(self) -> dspy.BaseLM:
        """The ``lm`` parameter, else the LM a fit ran with, else the default model (``build_lm``: $SYNTH_MODEL or
        offline; its engine is built once per process)."""
        if self.lm is not None:
            return self.lm
        return getattr(self, "lm_", None) or build_lm()

    def _threads(self) -> int:
        """Concurrent LM calls: ``num_threads``, or by default what suits the LM (see ``synth.lm.fit_threads``)."""
        return self.num_threads or fit_threads(self._lm())

    def _context(self):
        _ensure_response_cache()
        return dspy.context(lm=self._lm(), adapter=TolerantChatAdapter())

    @abc.abstractmethod
    def _program(self) -> PairwiseJudge:
        """The judge program this estimator predicts with."""

    @abc.abstractmethod
    def _max_turn_chars(self) -> int:
        """How long a turn may be in the judge's prompt before its middle is cut."""

    def predict_proba(self, context, completion_a, completion_b) -> float:
        """P(a is preferred over b), averaged over both orderings to cancel position bias."""
        pair = PreferencePair(as_context(context), as_completion(completion_a), as_completion(completion_b))
        program = self._program()
        with self._context():
            return PairScore.of(*judge_both_orders(program, pair, self._max_turn_chars())).p_correct

    def predict_pairwise(self, context, completion_a, completion_b) -> int:
        """+1 if a is preferred, -1 if b is (ties in probability go to a)."""
        return 1 if self.predict_proba(context, completion_a, completion_b) >= 0.5 else -1

    def evaluate(self, test_pairs: Sequence[PreferencePair], n_resamples: int = 1000) -> Accuracy:
        """Accuracy on held-out pairs in both orderings, with a 95% bootstrap interval over pairs."""
        program = self._program()
        with self._context():
            scores = score_pairs(program, test_pairs, self._max_turn_chars(), self._threads())
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
            inputs = judge_inputs(pair, True, self._max_turn_chars())
        return TolerantChatAdapter().format(program.reason.predict.signature, program.demos, inputs)


class DefaultJudge(_PairwiseEstimator):
    """The non-personalized baseline: the same judge with no persona and no demos."""

    def __init__(self, lm: dspy.BaseLM | None = None, reasoning_tokens: int = 256, max_turn_chars: int = 2000,
                 num_threads: int | None = None, seed: int = 0):
        self.lm = lm
        self.reasoning_tokens = reasoning_tokens
        self.max_turn_chars = max_turn_chars
        self.num_threads = num_threads
        self.seed = seed

    def fit(self, pairs: Sequence[PreferencePair] = (), **_: Any) -> DefaultJudge:
        """Nothing to learn; present so the baseline drops in wherever SynthesizeMe does."""
        return self

    def _program(self) -> PairwiseJudge:
        return PairwiseJudge(reasoning_tokens=self.reasoning_tokens)

    def _max_turn_chars(self) -> int:
        return self.max_turn_chars


class SynthesizeMe(_PairwiseEstimator):
    """Fit a personalized judge (persona + demos) from one user's preference pairs.

    >>> model = SynthesizeMe(lm=build_lm("offline"), quick=True).fit(pairs)
    >>> model.get_persona(), model.predict_proba(context, a, b), model.evaluate(test_pairs)

    Parameters left as None take their default (``num_candidates`` 10, ``max_demos`` 4, ``reasoning_tokens`` 256,
    ``persona_tokens`` 320), or with ``quick=True`` the quick one (3, 2, 48, 120): ``quick`` fills in only what was
    not given, so ``SynthesizeMe(quick=True, num_candidates=7)`` searches 7 candidates with quick's other settings.
    ``num_threads`` None means what suits the LM (``synth.lm.fit_threads``); ``lm`` None means the default model.

    Fitted attributes: ``settings_`` (the resolved ``StepSettings``), ``lm_``, ``persona_``, ``demos_`` and
    ``artifact_`` (everything the fit saw and chose; what ``save`` writes).
    """

    def __init__(self, lm: dspy.BaseLM | None = None, num_candidates: int | None = None, max_demos: int | None = None,
                 seed: int = 0, theta: str | Path | None = None, validation_fraction: float = 0.3,
                 reasoning_tokens: int | None = None, persona_tokens: int | None = None, max_turn_chars: int = 2000,
                 num_threads: int | None = None, quick: bool = False):
        self.lm = lm
        self.num_candidates = num_candidates
        self.max_demos = max_demos
        self.seed = seed
        self.theta = theta
        self.validation_fraction = validation_fraction
        self.reasoning_tokens = reasoning_tokens
        self.persona_tokens = persona_tokens
        self.max_turn_chars = max_turn_chars
        self.num_threads = num_threads
        self.quick = quick

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

    def _resolve_settings(self, lm: dspy.BaseLM) -> StepSettings:
        """``quick`` and the defaults applied to the parameters (see the class docstring)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(StepSettings)}
        return StepSettings.resolve(self.quick, **{**values, "num_threads": self.num_threads or fit_threads(lm)})

    def _fit(self, pairs, val_pairs, emit: EventCallback, cancel: threading.Event) -> None:
        pairs = list(pairs)
        train, validation = (pairs, list(val_pairs)) if val_pairs else split_train_validation(
            pairs, self.validation_fraction)
        if not train or not validation:
            raise ValueError("fit needs at least one training and one validation pair")
        writer, theta_id = load_theta(self.theta)
        lm = self._lm()
        settings = self._resolve_settings(lm)
        lock = threading.Lock()

        def safe_emit(event: Event) -> None:
            with lock:
                emit(event)

        runner = StepRunner(settings, safe_emit, cancel)
        rng = random.Random(self.seed)
        started = time.perf_counter()
        timings: dict[str, float] = {}
        fit_lm = lm.copy()  # its own history: usage of this fit is counted apart from concurrent fits
        _ensure_response_cache()
        with dspy.context(lm=fit_lm, adapter=TolerantChatAdapter()):
            mark = time.perf_counter()
            traces1, candidates1, best1 = runner.search(Stage.BOOTSTRAP, None, train, validation, rng)
            timings["bootstrap"] = time.perf_counter() - mark

            mark = time.perf_counter()
            note_traces = traces_for_persona(traces1, best1)
            persona = runner.write_persona(writer, runner.preference_notes(note_traces, train))
            timings["persona"] = time.perf_counter() - mark

            mark = time.perf_counter()
            traces3, candidates3, best3 = runner.search(Stage.DEMOS, persona or None, train, validation, rng)
            timings["demos"] = time.perf_counter() - mark

        positions = {t.pair_index: t.chosen_shown_first for t in traces3}
        ordered_positions = [positions.get(i, True) for i in range(len(train))]
        demos = runner.demos_for(best3, traces3, train, ordered_positions)
        timings["total"] = time.perf_counter() - started
        usage = _usage(fit_lm)
        fallbacks = sum(t.verdict_source == "fallback" for t in traces1 + traces3) + sum(
            c.verdict_fallbacks for c in candidates1 + candidates3)
        artifact = {
            "format": ARTIFACT_FORMAT,
            "persona": persona,
            "demos": [dict(d.toDict()) for d in demos],
            "traces": [t.to_dict() for t in traces1 + traces3],
            "candidates": [c.to_dict() for c in candidates1 + candidates3],
            "chosen": {"bootstrap": best1.candidate_id, "demos": best3.candidate_id},
            "validation_accuracy": best3.accuracy,
            "default_validation_accuracy": candidates1[0].accuracy,
            "theta_id": theta_id,
            "theta_instructions": writer.write.signature.instructions,
            "model": lm.model,
            "config": {**dataclasses.asdict(settings), "validation_fraction": self.validation_fraction,
                       "quick": self.quick},
            "timings": timings,
            "lm_usage": usage,
            "verdict_fallbacks": fallbacks,
            "pairs": {"train": [p.to_dict() for p in train], "validation": [p.to_dict() for p in validation]},
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.settings_, self.lm_, self.persona_, self.demos_, self.artifact_ = settings, lm, persona, demos, artifact
        safe_emit(DemosChosen(best3.candidate_id, len(demos), best3.accuracy))
        safe_emit(FitFinished(timings["total"], best3.accuracy, usage["lm_calls"], fallbacks,
                              summary={"persona": persona, "n_demos": len(demos),
                                       "default_validation_accuracy": candidates1[0].accuracy}))

    # ---- results ---------------------------------------------------------------------------------------------
    def _require_fit(self) -> None:
        if not hasattr(self, "persona_"):
            raise RuntimeError("call fit() or load() first")

    def _program(self) -> PairwiseJudge:
        self._require_fit()
        return PairwiseJudge(persona=self.persona_ or None, demos=self.demos_,
                             reasoning_tokens=self.settings_.reasoning_tokens)

    def _max_turn_chars(self) -> int:
        self._require_fit()
        return self.settings_.max_turn_chars

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
        fields = [f.name for f in dataclasses.fields(StepSettings)]
        settings = StepSettings(**{name: config[name] for name in fields if name in config})
        recorded = {name: config[name] for name in ("validation_fraction", "quick") if name in config}
        model = cls(lm=lm, **{name: getattr(settings, name) for name in fields}, **recorded)
        model.settings_ = settings
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
