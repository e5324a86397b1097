"""Batch evaluation over many users: resumable, concurrent, with per-user artifacts and the paper's table.

Every finished (model, user, method, context size) is appended as one JSON line to ``ledger.jsonl`` in the output
folder, after its artifact file is written. A rerun reads the ledger and only computes what is missing, so a killed
run continues where it stopped. Users run concurrently on threads sharing one LM, which keeps a batching local
engine or a vLLM server (``--model openai/<name> --api-base http://host:8000/v1``) busy; with Ray installed,
``backend="ray"`` fans users out over a Ray cluster instead (each worker builds its own LM from the spec).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dspy

from synth.data import atomic_write_text
from synth.evaluation.datasets import EvalDataset
from synth.evaluation.protocol import (
    DEFAULT_FRACTIONS,
    METHODS,
    PAPER_ORDER,
    MethodSettings,
    SynthesizeMeFits,
    UserSplit,
    prompt_artifact,
    split_user,
    summarize_scores,
)
from synth.parallel import run_concurrently

LEDGER_NAME = "ledger.jsonl"
ALL_CONTEXT = "all"
Emit = Callable[[dict[str, Any], dict[str, str]], None]


def slug(text: str) -> str:
    """A file name for a model or user id that no other id gets: its readable part (letters, digits, ``._-``) and a
    short hash of the raw id, so "张三" and "李四", or "a/b" and "a b", never share a folder (even on a file system
    that ignores case)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")[:60] or "id"
    return f"{readable}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:10]}"


def context_label(n_context: int | None) -> str:
    return ALL_CONTEXT if n_context is None else str(n_context)


def fit_key(model_label: str, user_id: str, n_context: int | None) -> str:
    """The name of a user's SynthesizeMe fit, shared by every method and check that reads it."""
    return f"{slug(model_label)}/{slug(user_id)}/fit-{context_label(n_context)}"


# ---- the ledger -------------------------------------------------------------------------------------------------
class Ledger:
    """Append-only JSONL of finished results. Each record is one line written whole (short writes are continued),
    then fsynced; a line torn by a kill mid-write, even inside a multi-byte character, is dropped on open (its work
    is simply redone)."""

    KEY_FIELDS = ("model", "user_id", "method", "n_context_limit")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete = raw[: raw.rfind(b"\n") + 1]  # bytes after the last newline are a torn write: dropped unread
        for number, line in enumerate(complete.split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                self._records.append(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                raise ValueError(f"{self.path}, line {number}: damaged ledger record ({reason}); remove that line "
                                 "to recompute it") from None
        if len(complete) < len(raw):
            atomic_write_text(self.path, complete.decode("utf-8"))

    @staticmethod
    def key(record: dict[str, Any]) -> tuple:
        return tuple(record[k] for k in Ledger.KEY_FIELDS)

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    def done(self) -> set[tuple]:
        return {self.key(r) for r in self.records()}

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._records.append(record)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may take fewer bytes than given); a write that takes none
    is an error, not a loop."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"could not write to the ledger: {len(view)} of {len(data)} bytes left unwritten")
        view = view[written:]


# ---- one user ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    methods: tuple[str, ...] = ("default", "synthesizeme")
    settings: MethodSettings = field(default_factory=MethodSettings)
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    n_users: int | None = None
    user_threads: int = 4
    context_sizes: tuple[int | None, ...] = (None,)  # None: the whole context; ints: sub-sampled (scaling)
    backend: str = "threads"  # or "ray"
    bootstrap_seed: int = 0


def user_splits(dataset: EvalDataset, config: RunConfig) -> tuple[list[UserSplit], list[str]]:
    """Splits of the users with enough pairs, and why any others were skipped."""
    splits, skipped = [], []
    for user in dataset.head(config.n_users).users:
        try:
            splits.append(split_user(user.user_id, user.pairs, config.fractions, config.settings.seed,
                                     user.demographics))
        except ValueError as exc:
            skipped.append(str(exc))
    return splits, skipped


def evaluate_user(split: UserSplit, lm: dspy.BaseLM, model_label: str, config: RunConfig, done: set[tuple],
                  fits: SynthesizeMeFits, emit: Emit) -> int:
    """Fit and score every missing (method, context size) of one user; ``emit`` records each one as it finishes.

    Returns how many results were computed."""
    computed = 0
    user_dir = f"artifacts/{slug(model_label)}/{slug(split.user_id)}"
    for n_context in config.context_sizes:
        if n_context is not None and n_context > len(split.context):
            continue
        limited = split.limit_context(n_context, config.settings.seed)
        label = context_label(n_context)
        key = fit_key(model_label, split.user_id, n_context)
        for name in config.methods:
            method = METHODS[name](lm, config.settings, fits)
            if (model_label, split.user_id, name, label) in done or not method.applies_to(limited):
                continue
            started = time.perf_counter()
            method.fit(limited, key)
            scores = method.predict(limited.test)
            seconds = time.perf_counter() - started
            artifact_path = f"{user_dir}/{name}-{label}.json"
            artifact = prompt_artifact(method, limited, {"model": model_label, "n_context_limit": label,
                                                         "scores": [s.to_dict() for s in scores]})
            record = {"model": model_label, "user_id": split.user_id, "method": name, "n_context_limit": label,
                      "n_context": len(limited.context), "n_validation": len(limited.validation),
                      "n_test": len(limited.test), "split_from_dataset": limited.from_dataset,
                      "scores": [s.score for s in scores],
                      "accuracy": sum(s.score for s in scores) / len(scores),
                      "verdict_fallbacks": sum(s.verdict_fallbacks for s in scores),
                      "persona": method.prompt_.persona, "n_demos": len(method.prompt_.demos),
                      "theta_id": method.prompt_.theta_id,
                      "seconds": round(seconds, 3), "artifact": artifact_path}
            emit(record, {artifact_path: json.dumps(artifact, ensure_ascii=False, indent=2) + "\n"})
            computed += 1
        fits.forget(key)
    return computed


# ---- many users -------------------------------------------------------------------------------------------------
@dataclass
class RunOutcome:
    out_dir: Path
    records: list[dict[str, Any]]
    computed: int
    skipped_users: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)


def run_evaluation(dataset: EvalDataset, lm: dspy.BaseLM | None, out_dir: str | Path, config: RunConfig,
                   model_label: str | None = None, lm_spec: dict[str, Any] | None = None,
                   progress: bool = True) -> RunOutcome:
    """Evaluate ``config.methods`` for every user of ``dataset``, resuming from ``out_dir/ledger.jsonl``.

    ``lm`` is shared by all user threads. For ``backend="ray"`` pass ``lm_spec`` (``build_lm`` keyword arguments,
    e.g. ``{"spec": "openai/llama", "api_base": "http://host:8000/v1"}``): each Ray worker builds its own LM.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model_label is None:
        from synth.lm import describe

        model_label = describe(lm).name if lm is not None else str((lm_spec or {}).get("spec"))
    ledger = Ledger(out_dir / LEDGER_NAME)
    done = ledger.done()
    splits, skipped = user_splits(dataset, config)
    pending = [s for s in splits if any(_missing(s, model_label, config, done, n) for n in config.context_sizes)]

    def emit(record: dict[str, Any], files: dict[str, str]) -> None:
        for relative, text in files.items():  # the artifact first: a ledger record always has its file
            atomic_write_text(out_dir / relative, text)
        ledger.append(record)

    bar = _progress_bar(len(pending), dataset.name, model_label, enabled=progress)
    computed = 0
    try:
        if config.backend == "ray":
            results = _ray_map(pending, model_label, config, done, lm_spec or {})
            for records in results:
                for record, files in records:
                    emit(record, files)
                computed += len(records)
                bar.update(1)
        elif config.backend == "threads":
            if lm is None:
                raise ValueError("the threads backend needs an LM")
            fits = SynthesizeMeFits(out_dir / "artifacts")

            def one_user(split: UserSplit) -> int:
                return evaluate_user(split, lm, model_label, config, done, fits, emit)

            for _, count in run_concurrently(one_user, pending, config.user_threads):
                computed += count
                bar.update(1)
        else:
            raise ValueError(f"unknown backend {config.backend!r}; use threads or ray")
    finally:
        bar.close()
    outcome = RunOutcome(out_dir, ledger.records(), computed, skipped)
    outcome.outputs = write_reports(outcome.records, out_dir, seed=config.bootstrap_seed)
    return outcome


def _missing(split: UserSplit, model_label: str, config: RunConfig, done: set[tuple], n_context: int | None) -> bool:
    if n_context is not None and n_context > len(split.context):
        return False
    return any((model_label, split.user_id, name, context_label(n_context)) not in done
               and (name != "demographics" or split.demographics) for name in config.methods)


def _progress_bar(total: int, dataset_name: str, model_label: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"{dataset_name} | {model_label}", unit="user", disable=not enabled)


def _ray_map(splits: Sequence[UserSplit], model_label: str, config: RunConfig, done: set[tuple],
             lm_spec: dict[str, Any]) -> Iterator[list[tuple[dict[str, Any], dict[str, str]]]]:
    """One Ray task per user; results come back to this process, which alone writes the ledger.

    Connects to a running cluster when ``RAY_ADDRESS`` is set (``ray start --head`` on one machine, ``ray start
    --address=...`` on the others), else starts a local one."""
    try:
        import ray
    except ImportError:
        raise RuntimeError("backend 'ray' needs Ray: pip install 'ray[default]'") from None
    ray.init(ignore_reinit_error=True)
    remote_user = ray.remote(_evaluate_user_in_worker)
    pending = [remote_user.remote(split, model_label, config, done, lm_spec) for split in splits]
    while pending:
        finished, pending = ray.wait(pending, num_returns=1)
        yield ray.get(finished[0])


def _evaluate_user_in_worker(split: UserSplit, model_label: str, config: RunConfig, done: set[tuple],
                             lm_spec: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Runs inside a Ray worker: build the LM from its spec, evaluate one user, return records and files."""
    from synth.lm import build_lm

    lm = build_lm(**lm_spec)
    collected: list[tuple[dict[str, Any], dict[str, str]]] = []
    evaluate_user(split, lm, model_label, config, done, SynthesizeMeFits(None),
                  lambda record, files: collected.append((record, files)))
    return collected


# ---- reports ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SummaryRow:
    model: str
    method: str
    n_context_limit: str
    accuracy: float
    ci_low: float
    ci_high: float
    n_users: int
    n_pairs: int
    verdict_fallbacks: int


def summarize(records: Sequence[dict[str, Any]], seed: int = 0) -> list[SummaryRow]:
    """Per (model, method, context size): the mean over all users' test pairs with a 95% bootstrap interval."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["model"], record["method"], record["n_context_limit"])].append(record)
    rows = []
    for (model, method, limit), group in groups.items():
        scores = [s for r in group for s in r["scores"]]
        accuracy = summarize_scores(scores, seed=seed)
        rows.append(SummaryRow(model, method, limit, accuracy.accuracy, accuracy.ci_low, accuracy.ci_high,
                               len(group), len(scores), sum(r["verdict_fallbacks"] for r in group)))
    order = {name: i for i, name in enumerate(PAPER_ORDER)}
    return sorted(rows, key=lambda r: (r.model, order.get(r.method, 99), _limit_order(r.n_context_limit)))


def _limit_order(limit: str) -> float:
    return float("inf") if limit == ALL_CONTEXT else float(limit)


def markdown_table(rows: Sequence[SummaryRow]) -> str:
    """Methods down, models across, accuracy ± half the 95% interval, in percent, like the paper's table."""
    rows = [r for r in rows if r.n_context_limit == ALL_CONTEXT]
    models = sorted({r.model for r in rows})
    cells = {(r.method, r.model): r for r in rows}
    methods = [m for m in PAPER_ORDER if any((m, model) in cells for model in models)]
    lines = ["| method | " + " | ".join(models) + " |", "|---|" + "---|" * len(models),
             "| random | " + " | ".join("50.00" for _ in models) + " |"]
    for method in methods:
        values = []
        for model in models:
            row = cells.get((method, model))
            values.append("–" if row is None else
                          f"{100 * row.accuracy:.2f} ± {100 * (row.ci_high - row.ci_low) / 2:.2f}")
        lines.append(f"| {METHODS[method].title} | " + " | ".join(values) + " |")
    counts = ", ".join(f"{model}: {max(r.n_users for r in rows if r.model == model)} users, "
                       f"{max(r.n_pairs for r in rows if r.model == model)} test pairs" for model in models)
    return "\n".join(lines) + f"\n\nAccuracy (%) on test pairs in both orderings, ± half the 95% bootstrap " \
                              f"interval over pairs. {counts}.\n"


def write_reports(records: Sequence[dict[str, Any]], out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """results.csv (one row per model × method × context size), per_user.csv and table.md, each written whole."""
    rows = summarize(records, seed)
    outputs = {"results": out_dir / "results.csv", "per_user": out_dir / "per_user.csv", "table": out_dir / "table.md"}
    summary_fields = list(SummaryRow.__dataclass_fields__)
    atomic_write_text(outputs["results"], csv_text(summary_fields, [r.__dict__ for r in rows]))
    user_fields = ["model", "user_id", "method", "n_context_limit", "n_context", "n_validation", "n_test",
                   "accuracy", "verdict_fallbacks", "n_demos", "seconds", "artifact"]
    atomic_write_text(outputs["per_user"], csv_text(user_fields, records))
    atomic_write_text(outputs["table"], markdown_table(rows) if rows else "No results yet.\n")
    return outputs


def csv_text(fields: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
