"""synth.evaluation.runner: every method over many users, the resumable ledger, reports."""

from __future__ import annotations

import json

import dspy
import pytest

from synth.evaluation.datasets import EvalDataset
from synth.evaluation.protocol import MethodSettings
from synth.evaluation.runner import LEDGER_NAME, Ledger, RunConfig, run_evaluation
from tests.scripted import ScriptedEngine, make_population, scripted_lm

ALL_METHODS = ("default", "demographics", "memory", "demos", "personas", "synthesizeme")


def test_all_methods_end_to_end_with_a_scripted_lm(tmp_path):
    dataset = EvalDataset.from_pairs(make_population(), "scripted")
    lm, engine = scripted_lm()
    outcome = run_evaluation(dataset, lm, tmp_path, RunConfig(methods=ALL_METHODS,
                                                              settings=MethodSettings(num_threads=4)),
                             model_label="scripted", progress=False)
    by_key = {(r["user_id"], r["method"]): r for r in outcome.records}
    assert outcome.computed == len(by_key) == 3 * 5 + 1  # demographics only for the user that has them
    assert engine.calls["persona"] == 3  # one shared fit per user serves demos, personas and synthesizeme
    for user in ("user-0", "user-1", "user-2"):
        assert by_key[(user, "personas")]["persona"] == by_key[(user, "synthesizeme")]["persona"]
        assert by_key[(user, "personas")]["n_demos"] == 0
        assert by_key[(user, "memory")]["n_demos"] == by_key[(user, "memory")]["n_context"] == 5
        assert by_key[(user, "demos")]["persona"] is None
        artifact = json.loads((tmp_path / by_key[(user, "synthesizeme")]["artifact"]).read_text())
        assert len(artifact["test_pairs"]) == 3 and artifact["persona"]
    assert by_key[("user-0", "demographics")]["persona"] == "Person number 0."
    table = (tmp_path / "table.md").read_text()
    assert "| personas + demos | 100.00 ± 0.00 |" in table  # the scripted persona makes the judge exact
    assert "| demographics |" in table
    results = (tmp_path / "results.csv").read_text().splitlines()
    assert results[0].startswith("model,method,n_context_limit,accuracy") and len(results) == 7


class FailingEngine(ScriptedEngine):
    """Raises on the N-th LM call, like a server that dies or a run that is killed mid-way."""

    def __init__(self, fail_at: int, **kwargs):
        super().__init__(**kwargs)
        self.fail_at = fail_at
        self.total = 0

    def _count(self):
        with self.lock:
            self.total += 1
            if self.total == self.fail_at:
                raise RuntimeError("server went away")

    def complete(self, request):
        self._count()
        return super().complete(request)


def _engine_lm(engine):
    return dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=256, cache=False)


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    dataset = EvalDataset.from_pairs(make_population(4), "scripted")
    config = RunConfig(methods=("default", "memory", "synthesizeme"), settings=MethodSettings(num_threads=1),
                       user_threads=1)
    reference_engine = ScriptedEngine()
    reference = run_evaluation(dataset, _engine_lm(reference_engine), tmp_path / "reference", config,
                               model_label="m", progress=False)
    full_calls = sum(reference_engine.calls.values())

    failing = FailingEngine(fail_at=(reference_engine.calls["judge"] + reference_engine.calls["persona"]) // 2)
    with pytest.raises(Exception, match="server went away"):
        run_evaluation(dataset, _engine_lm(failing), tmp_path / "run", config, model_label="m", progress=False)
    ledger_after_crash = (tmp_path / "run" / LEDGER_NAME).read_text()
    first_records = Ledger(tmp_path / "run" / LEDGER_NAME).records()
    assert 0 < len(first_records) < len(reference.records)

    resumed_engine = ScriptedEngine()
    resumed = run_evaluation(dataset, _engine_lm(resumed_engine), tmp_path / "run", config, model_label="m",
                             progress=False)
    assert resumed.computed == len(reference.records) - len(first_records)
    assert (tmp_path / "run" / LEDGER_NAME).read_text().startswith(ledger_after_crash)  # nothing rewritten
    assert sum(resumed_engine.calls.values()) < full_calls
    key = Ledger.key
    assert sorted(map(key, resumed.records)) == sorted(map(key, reference.records))
    assert len({key(r) for r in resumed.records}) == len(resumed.records)  # nothing twice
    reference_scores = {key(r): r["scores"] for r in reference.records}
    assert all(r["scores"] == reference_scores[key(r)] for r in resumed.records)
    assert (tmp_path / "run" / "table.md").read_text() == (tmp_path / "reference" / "table.md").read_text()

    again_engine = ScriptedEngine()
    again = run_evaluation(dataset, _engine_lm(again_engine), tmp_path / "run", config, model_label="m",
                           progress=False)
    assert again.computed == 0 and sum(again_engine.calls.values()) == 0


def test_finished_fit_is_reused_after_a_crash_in_scoring(tmp_path):
    dataset = EvalDataset.from_pairs(make_population(1), "scripted")
    config = RunConfig(methods=("synthesizeme",), settings=MethodSettings(num_threads=1), user_threads=1)
    probe = ScriptedEngine()
    run_evaluation(dataset, _engine_lm(probe), tmp_path / "probe", config, model_label="m", progress=False)
    test_calls = 2 * 3  # three test pairs in both orderings come last
    completions = probe.calls["judge"] + probe.calls["persona"]  # what FailingEngine counts
    failing = FailingEngine(fail_at=completions - test_calls + 1)
    with pytest.raises(Exception, match="server went away"):
        run_evaluation(dataset, _engine_lm(failing), tmp_path / "run", config, model_label="m", progress=False)
    assert list((tmp_path / "run").rglob("fit-all.synthesizeme.json"))
    resumed = ScriptedEngine()
    run_evaluation(dataset, _engine_lm(resumed), tmp_path / "run", config, model_label="m", progress=False)
    assert dict(resumed.calls) == {"judge": test_calls, "score": test_calls}  # only the test pairs again


def test_torn_ledger_line_is_dropped_and_damaged_one_named(tmp_path):
    path = tmp_path / LEDGER_NAME
    good = {"model": "m", "user_id": "u", "method": "default", "n_context_limit": "all"}
    path.write_text(json.dumps(good) + "\n" + '{"model": "m", "user_')
    ledger = Ledger(path)
    assert ledger.done() == {("m", "u", "default", "all")}
    assert path.read_text() == json.dumps(good) + "\n"
    path.write_text("not json\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        Ledger(path)


def test_user_file_names_never_collide():
    from synth.evaluation.runner import fit_key, slug

    for one, other in [("张三", "李四"), ("a/b", "a b"), ("Alice", "alice"), ("x", "x_"), ("", "_")]:
        assert slug(one) != slug(other) and slug(one).lower() != slug(other).lower()
        assert fit_key("m", one, None) != fit_key("m", other, None)
    assert slug("user-7").startswith("user-7-") and "/" not in slug("a/b") and slug("张三").startswith("id-")
    assert slug("a" * 500) == slug("a" * 500) and len(slug("a" * 500)) < 80


def test_users_whose_ids_share_a_slug_are_scored_with_their_own_fits(tmp_path):
    import dataclasses

    pairs = make_population(1, 10)
    users = [dataclasses.replace(p, user_id=user) for user in ("张三", "李四") for p in pairs]
    lm, engine = scripted_lm(persona="The user prefers short replies.")
    outcome = run_evaluation(EvalDataset.from_pairs(users, "clash"), lm, tmp_path,
                             RunConfig(methods=("synthesizeme",), settings=MethodSettings(num_threads=2)),
                             model_label="m", progress=False)
    assert engine.calls["persona"] == 2  # two fits, not one shared by both users
    paths = {r["artifact"] for r in outcome.records}
    assert len(paths) == 2 and len(list(tmp_path.rglob("fit-all.synthesizeme.json"))) == 2


def test_a_ledger_torn_inside_a_multibyte_character_resumes(tmp_path):
    path = tmp_path / LEDGER_NAME
    good = {"model": "m", "user_id": "张三", "method": "default", "n_context_limit": "all"}
    torn = json.dumps({**good, "user_id": "李四"}, ensure_ascii=False).encode("utf-8")
    cut = torn.index("李".encode()) + 1  # inside the three bytes of 李
    path.write_bytes(json.dumps(good, ensure_ascii=False).encode("utf-8") + b"\n" + torn[:cut])
    ledger = Ledger(path)
    assert ledger.done() == {("m", "张三", "default", "all")}
    assert path.read_bytes() == json.dumps(good, ensure_ascii=False).encode("utf-8") + b"\n"
    path.write_bytes(b"\xff\xfe broken\n" + json.dumps(good).encode() + b"\n")  # damage inside, not a torn tail
    with pytest.raises(ValueError, match="line 1: damaged ledger record"):
        Ledger(path)


def test_short_writes_are_completed_and_a_stuck_write_is_reported(tmp_path, monkeypatch):
    import os

    from synth.evaluation import runner

    real_write = os.write
    monkeypatch.setattr(runner.os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))  # 3 bytes at a time
    ledger = Ledger(tmp_path / LEDGER_NAME)
    record = {"model": "m", "user_id": "u", "method": "default", "n_context_limit": "all", "note": "é" * 50}
    ledger.append(record)
    assert Ledger(tmp_path / LEDGER_NAME).records() == [record]
    monkeypatch.setattr(runner.os, "write", lambda fd, data: 0)
    with pytest.raises(OSError, match="bytes left unwritten"):
        ledger.append(record)
