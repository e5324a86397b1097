"""SynthesizeMe and DefaultJudge: estimators in the scikit-learn style (parameters in ``__init__``, ``fit``,
``predict_*``, ``evaluate``) that mirror the official library's API and add events, probabilities and artifacts.

What carries over from the official library: ``fit(rows, val_data=...)`` with plain row dicts, ``user_id``, the
70/30 split of the given order, the ``flip`` column, ``evaluate`` with ``mean``/``lower_bound``/``upper_bound``/
``results``, ``get_demos(keys="official")``, and ``save``/``load`` of its folder layout. What is added: P(first) and
``predict_proba`` over both orderings, typed events, and the one-file artifact with every trace and candidate.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import hashlib
import inspect
import json
import os
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dspy

from synth.artifacts import (
    DEFAULT_LIMITS,
    OFFICIAL_DEMO_KEYS,
    ArtifactLimits,
    check_artifact,
    read_artifact_file,
    read_official_save,
    write_official_save,
)
from synth.data import ROLE_ALIASES, PreferencePair, Turn, as_pairs, atomic_write_text, split_train_validation
from synth.events import DemosChosen, Event, EventCallback, FitFinished, Stage
from synth.judge import FALLBACK_SOURCES, PairwiseJudge, resolve_verdict_policy
from synth.lm import build_lm, configure_cache, fit_threads, owned_by
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
from synth.theta import load_theta, theta_instructions

ARTIFACT_FORMAT = "synthesizeme-studio/2"
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
    return tuple(t if isinstance(t, Turn) else Turn(ROLE_ALIASES.get(t["role"], t["role"]), t["content"])
                 for t in context)


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

    def evaluate(self, test_data: Sequence[PreferencePair | dict[str, Any]], n_resamples: int = 1000) -> Accuracy:
        """Accuracy on held-out pairs (pairs or official row dicts) in both orderings, with a 95% bootstrap interval
        over pairs and the per-item results (``Accuracy.per_pair_scores``, ``Accuracy.results``)."""
        pairs = as_pairs(test_data, "evaluate(test_data)")
        program = self._program()
        with self._context():
            scores = score_pairs(program, pairs, self._max_turn_chars(), self._threads())
        results = [int(s.correct_chosen_first) for s in scores] + [int(s.correct_chosen_second) for s in scores]
        return accuracy_with_interval([s.score for s in scores], n_resamples=n_resamples, seed=self.seed,
                                      verdict_fallbacks=sum(s.verdict_fallbacks for s in scores), results=results)

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
                 num_threads: int | None = None, seed: int = 0, verdict_policy: str | None = None):
        self.lm = lm
        self.reasoning_tokens = reasoning_tokens
        self.max_turn_chars = max_turn_chars
        self.num_threads = num_threads
        self.seed = seed
        self.verdict_policy = verdict_policy

    def fit(self, data: Sequence[PreferencePair] = (), **_: Any) -> DefaultJudge:
        """Nothing to learn; present so the baseline drops in wherever SynthesizeMe does."""
        return self

    def _program(self) -> PairwiseJudge:
        return PairwiseJudge(reasoning_tokens=self.reasoning_tokens, verdict_policy=self.verdict_policy)

    def _max_turn_chars(self) -> int:
        return self.max_turn_chars


class SynthesizeMe(_PairwiseEstimator):
    """Fit a personalized judge (persona + demos) from one user's preference pairs.

    >>> model = SynthesizeMe(lm=build_lm("offline"), quick=True).fit(pairs)
    >>> model.get_persona(), model.predict_proba(context, a, b), model.evaluate(test_pairs)

    Parameters left as None take their default (``num_candidates`` 10, ``max_demos`` no cap, ``reasoning_tokens``
    256, ``persona_tokens`` 320), or with ``quick=True`` the quick one (3, 2, 48, 120): ``quick`` fills in only what
    was not given, so ``SynthesizeMe(quick=True, num_candidates=7)`` searches 7 candidates with quick's other
    settings. ``num_threads`` None means what suits the LM (``synth.lm.fit_threads``); ``lm`` None means the default
    model; ``user_id`` None means the pairs' own ``user_id``, else a name made from the pairs. ``verdict_policy``,
    ``tie_break`` and ``stop_at_score``: see ``synth.judge`` and ``synth.steps.StepSettings``; every default and why
    it was chosen is in docs/fidelity.md.

    Fitted attributes: ``settings_`` (the resolved ``StepSettings``), ``lm_``, ``user_id_``, ``persona_``, ``demos_``
    and ``artifact_`` (everything the fit saw and chose; what ``save`` writes). A loaded judge also has ``clamped_``
    (settings and demos its file asked for beyond ``ArtifactLimits``).
    """

    def __init__(self, lm: dspy.BaseLM | None = None, user_id: str | None = None, num_candidates: int | None = None,
                 max_demos: int | None = None, max_labeled_demos: int = 4, seed: int = 0,
                 theta: str | Path | None = None, train_val_ratio: float = 0.7, reasoning_tokens: int | None = None,
                 persona_tokens: int | None = None, max_turn_chars: int = 2000, num_threads: int | None = None,
                 quick: bool = False, verdict_policy: str | None = None, tie_break: str = "confidence",
                 stop_at_score: float | None = None):
        self.lm = lm
        self.user_id = user_id
        self.num_candidates = num_candidates
        self.max_demos = max_demos
        self.max_labeled_demos = max_labeled_demos
        self.seed = seed
        self.theta = theta
        self.train_val_ratio = train_val_ratio
        self.reasoning_tokens = reasoning_tokens
        self.persona_tokens = persona_tokens
        self.max_turn_chars = max_turn_chars
        self.num_threads = num_threads
        self.quick = quick
        self.verdict_policy = verdict_policy
        self.tie_break = tie_break
        self.stop_at_score = stop_at_score

    # ---- fitting ---------------------------------------------------------------------------------------------
    def fit(self, data: Sequence[PreferencePair | dict[str, Any]],
            val_data: Sequence[PreferencePair | dict[str, Any]] | None = None,
            callback: EventCallback | None = None, cancel: threading.Event | None = None) -> SynthesizeMe:
        """Run the three steps on ``data`` (pairs or official row dicts); ``val_data`` None splits ``data`` by
        ``train_val_ratio``. ``callback`` receives every event; ``cancel`` stops the fit early."""
        self._fit(data, val_data, callback or (lambda event: None), cancel or threading.Event())
        return self

    def fit_events(self, data: Sequence[PreferencePair | dict[str, Any]],
                   val_data: Sequence[PreferencePair | dict[str, Any]] | None = None,
                   cancel: threading.Event | None = None) -> Iterator[Event]:
        """Run ``fit`` in a worker thread and yield its events as they happen; closing the iterator cancels."""
        cancel = cancel or threading.Event()
        events: queue.Queue = queue.Queue()
        done = object()
        failure: list[BaseException] = []

        def work():
            try:
                self._fit(data, val_data, events.put, cancel)
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
        """``quick`` and the defaults applied to the parameters (see the class docstring). ``verdict_policy`` stays
        as given (None: each LM's default, also when the judge is later used with another LM)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(StepSettings)}
        return StepSettings.resolve(self.quick, **{**values, "num_threads": self.num_threads or fit_threads(lm)})

    def _split(self, data, val_data) -> tuple[list[PreferencePair], list[PreferencePair]]:
        pairs = as_pairs(data, "fit(data)")
        if val_data is None:
            train, validation = split_train_validation(pairs, self.train_val_ratio)
        else:
            train, validation = pairs, as_pairs(val_data, "fit(val_data)")
        if not train or not validation:
            raise ValueError("fit needs at least one training and one validation pair")
        return train, validation

    def _resolve_user_id(self, pairs: Sequence[PreferencePair]) -> str:
        """``user_id``, else the pairs' own, else a stable name made from their content."""
        if self.user_id is not None:
            return str(self.user_id)
        ids = {p.user_id for p in pairs if p.user_id}
        if len(ids) == 1:
            return ids.pop()
        digest = hashlib.sha256(json.dumps([p.to_dict() for p in pairs], sort_keys=True).encode()).hexdigest()
        return f"user-{digest[:12]}"

    def _fit(self, data, val_data, emit: EventCallback, cancel: threading.Event) -> None:
        train, validation = self._split(data, val_data)
        user_id = self._resolve_user_id([*train, *validation])
        writer, theta_id = load_theta(self.theta)
        lm = self._lm()
        settings = self._resolve_settings(lm)
        verdict_policy = resolve_verdict_policy(settings.verdict_policy, lm)  # checked before any call
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
        with dspy.context(lm=fit_lm, adapter=TolerantChatAdapter()), owned_by(cancel=cancel, name=user_id):
            mark = time.perf_counter()
            traces1, candidates1, best1 = runner.search(Stage.BOOTSTRAP, None, train, validation, rng)
            timings["bootstrap"] = time.perf_counter() - mark

            mark = time.perf_counter()
            notes = runner.preference_notes(writer, traces_for_persona(traces1, best1), train)
            persona = runner.write_persona(writer, notes)
            timings["persona"] = time.perf_counter() - mark

            mark = time.perf_counter()
            traces3, candidates3, best3 = runner.search(Stage.DEMOS, persona or None, train, validation, rng)
            timings["demos"] = time.perf_counter() - mark

        positions = {t.pair_index: t.chosen_shown_first for t in traces3}
        ordered_positions = [positions.get(i, True) for i in range(len(train))]
        demos = runner.demos_for(best3, traces3, train, ordered_positions)
        timings["total"] = time.perf_counter() - started
        usage = _usage(fit_lm)
        traces, candidates = traces1 + traces3, candidates1 + candidates3
        sources = Counter(t.verdict_source for t in traces)
        for candidate in candidates:
            sources.update(candidate.verdict_sources)
        fallbacks = sum(t.verdict_source in FALLBACK_SOURCES for t in traces) + sum(
            c.verdict_fallbacks for c in candidates)
        artifact = {
            "format": ARTIFACT_FORMAT,
            "user_id": user_id,
            "persona": persona,
            "demos": [dict(d.toDict()) for d in demos],
            "traces": [t.to_dict() for t in traces],
            "candidates": [c.to_dict() for c in candidates],
            "chosen": {"bootstrap": best1.candidate_id, "demos": best3.candidate_id},
            "validation_accuracy": best3.accuracy,
            "default_validation_accuracy": candidates1[0].accuracy,
            "theta_id": theta_id,
            "theta_instructions": theta_instructions(writer),
            "persona_notes": notes,
            "model": lm.model,
            "config": {**dataclasses.asdict(settings), "train_val_ratio": self.train_val_ratio, "quick": self.quick},
            "timings": timings,
            "lm_usage": usage,
            "verdict_policy": verdict_policy,
            "verdict_sources": dict(sorted(sources.items())),
            "verdict_fallbacks": fallbacks,
            "pairs": {"train": [p.to_dict() for p in train], "validation": [p.to_dict() for p in validation]},
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self.settings_, self.lm_, self.user_id_ = settings, lm, user_id
        self.persona_, self.demos_, self.artifact_ = persona, demos, artifact
        safe_emit(DemosChosen(best3.candidate_id, len(demos), best3.accuracy))
        safe_emit(FitFinished(timings["total"], best3.accuracy, usage["lm_calls"], fallbacks,
                              summary={"persona": persona, "n_demos": len(demos),
                                       "default_validation_accuracy": candidates1[0].accuracy,
                                       "verdict_sources": artifact["verdict_sources"]}))

    # ---- results ---------------------------------------------------------------------------------------------
    def _require_fit(self) -> None:
        if not hasattr(self, "persona_"):
            raise RuntimeError("call fit() or load() first")

    def _program(self) -> PairwiseJudge:
        self._require_fit()
        return PairwiseJudge(persona=self.persona_ or None, demos=self.demos_,
                             reasoning_tokens=self.settings_.reasoning_tokens,
                             verdict_policy=self.settings_.verdict_policy)

    def _max_turn_chars(self) -> int:
        self._require_fit()
        return self.settings_.max_turn_chars

    def get_persona(self) -> str:
        self._require_fit()
        return self.persona_

    def get_demos(self, keys: str = "ours") -> list[dict[str, Any]]:
        """The chosen demos; ``keys="official"`` names their fields as the official library does
        (``first_completion``, ``second_completion``, ``preference``)."""
        self._require_fit()
        if keys not in ("ours", "official"):
            raise ValueError(f"keys must be 'ours' or 'official', got {keys!r}")
        demos = [dict(d.toDict()) for d in self.demos_]
        if keys == "official":
            return [{OFFICIAL_DEMO_KEYS[k]: v for k, v in demo.items() if k in OFFICIAL_DEMO_KEYS} for demo in demos]
        return demos

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

    def save(self, path: str | Path) -> Path:
        """A ``.json`` path (anything but a folder): one JSON artifact with persona, demos, every trace, candidate
        scores, Θ id, model, config and timings. An existing folder, or a path ending in a separator: the official
        library's layout in it (``<user_id>_persona.txt`` + ``<user_id>.json``). Returns the file written (the
        program's JSON for the official layout)."""
        self._require_fit()
        if _is_folder(path):
            state = self._program().reason.predict.dump_state()
            return write_official_save(path, self.user_id_, self.persona_, state, self.get_demos())
        atomic_write_text(path, json.dumps(self.artifact_, ensure_ascii=False, indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, lm: dspy.BaseLM | None = None, limits: ArtifactLimits = DEFAULT_LIMITS,
             user_id: str | None = None) -> SynthesizeMe:
        """A saved judge: our artifact file, or a folder in the official layout (``user_id`` picks the user; None:
        the folder's only one). The file is checked and bounded by ``limits`` (see ``from_artifact``)."""
        path = Path(path)
        if path.is_dir():
            return cls.from_artifact(read_official_save(path, user_id), lm=lm, limits=limits, source=str(path))
        return cls.from_artifact(read_artifact_file(path), lm=lm, limits=limits, source=str(path))

    @classmethod
    def from_artifact(cls, artifact: Any, lm: dspy.BaseLM | None = None, limits: ArtifactLimits = DEFAULT_LIMITS,
                      source: str = "<artifact>") -> SynthesizeMe:
        """A judge rebuilt from an artifact dict, which is data, never configuration: persona and demo fields must
        be strings and demos a list of objects (``synth.artifacts.ArtifactError`` names the field otherwise);
        settings are lowered to ``limits``, demos beyond ``limits.demos`` dropped and long demo texts cut
        (``clamped_`` lists what changed). The defaults are safe for files from strangers."""
        loaded = check_artifact(artifact, limits, source)
        settings = loaded.settings
        parameters = {f.name: getattr(settings, f.name) for f in dataclasses.fields(StepSettings)}
        model = cls(lm=lm, **parameters, quick=bool(artifact["config"].get("quick") is True))
        model.settings_ = settings
        model.user_id_ = str(artifact.get("user_id") or "user")
        model.persona_ = loaded.persona
        model.demos_ = [dspy.Example(**d).with_inputs("conversation", "first_reply", "second_reply")
                        for d in loaded.demos]
        model.clamped_ = loaded.clamped
        model.artifact_ = {**artifact, "persona": loaded.persona, "demos": loaded.demos,
                           "config": {**dataclasses.asdict(settings), "quick": model.quick}}
        return model


def _is_folder(path: str | Path) -> bool:
    text = str(path)
    return Path(path).is_dir() or text.endswith(("/", os.sep))


def _usage(lm: dspy.BaseLM) -> dict[str, int]:
    calls = prompt_tokens = completion_tokens = 0
    for entry in lm.history:
        calls += 1
        usage = entry.get("usage") or {}
        prompt_tokens += int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
        completion_tokens += int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    return {"lm_calls": calls, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
