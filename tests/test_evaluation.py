"""Evaluation harness: splits, both orderings, intervals, resumption, loaders, scaling slope, CLI, one real run."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest

from synth.data import PairFileError, PreferencePair
from synth.evaluation import cli
from synth.evaluation.context_scaling import fit_slope, run_context_scaling, scaling_analysis
from synth.evaluation.datasets import (
    demographics_text,
    group_by_user,
    load_eval_dataset,
    load_parquet_pairs,
    load_prism_raw,
    synthetic_dataset,
    write_jsonl_pairs,
    write_parquet_pairs,
)
from synth.evaluation.protocol import (
    JudgePrompt,
    MethodSettings,
    judge_test_pairs,
    parse_methods,
    split_user,
    summarize_scores,
)
from synth.evaluation.runner import LEDGER_NAME, Ledger, RunConfig, run_evaluation
from tests.scripted import ScriptedEngine, make_pairs, scripted_lm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ALL_METHODS = ("default", "demographics", "memory", "demos", "personas", "synthesizeme")


def population(n_users: int = 3, n_pairs: int = 10) -> list[PreferencePair]:
    """Users who all prefer short replies; pairs 1 and 4 of each carry the word that fools the plain judge."""
    pairs = []
    for user in range(n_users):
        pairs += [dataclasses.replace(p, user_id=f"user-{user}", conversation_id=f"c{user}-{i}",
                                      extra={"demographics": f"Person number {user}."} if user == 0 else {})
                  for i, p in enumerate(make_pairs(n_pairs, {1, 4}))]
    return pairs


# ---- splits -----------------------------------------------------------------------------------------------------
def test_split_is_50_20_30_seeded_and_disjoint():
    pairs = make_pairs(10)
    split = split_user("u", pairs, seed=3)
    assert (len(split.context), len(split.validation), len(split.test)) == (5, 2, 3)
    ids = [p.chosen.content for p in split.context + split.validation + split.test]
    assert sorted(ids) == sorted(p.chosen.content for p in pairs)
    assert split_user("u", pairs, seed=3) == split
    assert split_user("u", pairs, seed=4) != split
    tiny = split_user("u", make_pairs(3))
    assert (len(tiny.context), len(tiny.validation), len(tiny.test)) == (1, 1, 1)
    with pytest.raises(ValueError, match="at least 3"):
        split_user("u", make_pairs(2))


def test_dataset_split_column_is_honoured():
    names = ["train", "train", "val", "test", "test", "train"]
    pairs = [p.with_split(s) for p, s in zip(make_pairs(6), names, strict=True)]
    split = split_user("u", pairs)
    assert split.from_dataset
    assert [p.chosen.content for p in split.test] == [pairs[3].chosen.content, pairs[4].chosen.content]
    assert len(split.context) == 3 and len(split.validation) == 1
    # a split column lacking a part falls back to the fractions
    assert not split_user("u", [p.with_split("train") for p in make_pairs(6)]).from_dataset


def test_context_subsampling_is_nested():
    split = split_user("u", make_pairs(20))
    small, large = split.limit_context(2), split.limit_context(5)
    assert set(small.context) < set(large.context) and large.test == split.test


# ---- scoring ----------------------------------------------------------------------------------------------------
def test_each_test_pair_is_judged_in_both_orderings():
    lm, engine = scripted_lm()
    test = make_pairs(4, tricks={0})
    scores = judge_test_pairs(JudgePrompt(), test, lm, num_threads=2)
    shown = {(first, second) for first, second, _ in engine.seen_orders}
    for pair in test:
        assert (pair.chosen.content, pair.rejected.content) in shown
        assert (pair.rejected.content, pair.chosen.content) in shown
    assert [s.score for s in scores] == [0.0, 1.0, 1.0, 1.0]  # the trick fools the plain judge both ways
    assert scores[1].p_correct_chosen_first == pytest.approx(0.8)


def test_position_bias_scores_half():
    class AlwaysFirst(ScriptedEngine):
        def verdict(self, messages):
            return "First", "The first one."

    import dspy
    engine = AlwaysFirst()
    lm = dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=64, cache=False)
    scores = judge_test_pairs(JudgePrompt(), make_pairs(3), lm)
    assert [s.score for s in scores] == [0.5] * 3
    assert all(s.correct_chosen_first and not s.correct_chosen_second for s in scores)


def test_interval_brackets_the_mean_and_narrows_with_more_pairs():
    few = summarize_scores([1, 0, 1, 0.5, 1, 0])
    many = summarize_scores([1, 0, 1, 0.5, 1, 0] * 50)
    assert few.ci_low <= few.accuracy <= few.ci_high
    assert few.accuracy == pytest.approx(many.accuracy)
    assert many.ci_high - many.ci_low < few.ci_high - few.ci_low
    assert summarize_scores([1.0] * 5).ci_low == 1.0


def test_methods_are_parsed_into_paper_order():
    assert parse_methods("synthesizeme,default") == ["default", "synthesizeme"]
    assert parse_methods("all") == list(ALL_METHODS)
    with pytest.raises(ValueError, match="unknown"):
        parse_methods("default,oracle")


# ---- the runner with a scripted LM --------------------------------------------------------------------------------
def test_all_methods_end_to_end_with_a_scripted_lm(tmp_path):
    dataset = group_by_user(population(), "scripted")
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
    import dspy

    return dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=256, cache=False)


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    dataset = group_by_user(population(4), "scripted")
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
    dataset = group_by_user(population(1), "scripted")
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


# ---- loaders ----------------------------------------------------------------------------------------------------
def test_jsonl_and_parquet_round_trip_grouped_by_user(tmp_path):
    splits = ["train", "train", "train", "val", "test", "test"] * 2
    pairs = [p.with_split(s) for p, s in zip(population(2, 6), splits, strict=True)]
    write_jsonl_pairs(pairs, tmp_path / "bench.jsonl")
    write_parquet_pairs(pairs, tmp_path / "bench.parquet")
    for name in ("bench.jsonl", "bench.parquet"):
        dataset = load_eval_dataset(tmp_path / name)
        assert [u.user_id for u in dataset.users] == ["user-0", "user-1"]
        assert [len(u.pairs) for u in dataset.users] == [6, 6]
        assert dataset.users[0].pairs[0] == pairs[0] and dataset.users[0].pairs[4].split == "test"
        assert dataset.users[0].demographics == "Person number 0." and dataset.users[1].demographics is None
    assert not list(tmp_path.glob(".*.tmp"))


def test_bad_rows_are_named_by_file_line_and_field(tmp_path):
    rows = [p.to_dict() for p in population(1, 3)]
    rows[1]["chosen"] = {"role": "assistant", "content": ""}
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    with pytest.raises(PairFileError, match=r"bad.parquet, line 2, field 'chosen.content'"):
        load_parquet_pairs(tmp_path / "bad.parquet")
    no_user = [p.to_dict() for p in make_pairs(3)]
    del no_user[2]["user_id"]
    (tmp_path / "anon.jsonl").write_text("".join(json.dumps(r) + "\n" for r in no_user))
    with pytest.raises(PairFileError, match="line 3, field 'user_id'"):
        load_eval_dataset(tmp_path / "anon.jsonl")
    with pytest.raises(PairFileError, match=r"not a \.jsonl"):
        load_eval_dataset(tmp_path / "pairs.csv")


def _prism_message(turn, role, content, score=None, chosen=None, model=None):
    return {"turn": turn, "role": role, "content": content, "score": score, "if_chosen": chosen,
            "model_name": model, "within_turn_id": 0}


def test_raw_prism_ratings_become_pairs_with_demographics(tmp_path):
    conversation = {"conversation_id": "c1", "user_id": "user-9", "conversation_history": [
        _prism_message(0, "user", "Is coffee bad for me?"),
        _prism_message(0, "model", "Moderate coffee is fine for most adults.", 90, True, "a"),
        _prism_message(0, "model", "Coffee is poison.", 20, False, "b"),
        _prism_message(0, "model", "It depends on many factors.", 60, False, "c"),
        _prism_message(0, "model", "Also fine, roughly.", 90, False, "d"),  # ties with the best: no pair
        _prism_message(1, "user", "And tea?"),
        _prism_message(1, "model", "Tea is gentler.", 40, False, "a"),
        _prism_message(1, "model", "Tea has less caffeine, so it is gentler on sleep.", 70, True, "b"),
    ]}
    other = {"conversation_id": "c2", "user_id": "user-8", "conversation_history": [
        _prism_message(0, "user", "Hi"), _prism_message(0, "model", "Hello!", 50, True, "a")]}
    survey = [{"user_id": "user-9", "age": "25-34 years old", "gender": "Female",
               "religion": {"simplified": "No religion"}, "location": {"reside_country": "Canada"},
               "education": "Prefer not to say"}]
    (tmp_path / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (conversation, other)))
    (tmp_path / "survey.jsonl").write_text("".join(json.dumps(r) + "\n" for r in survey))
    dataset = load_prism_raw(tmp_path, min_pairs=1)
    assert [u.user_id for u in dataset.users] == ["user-9"]
    user = dataset.users[0]
    assert [(p.chosen.content[:8], p.rejected.content[:8]) for p in user.pairs] == [
        ("Moderate", "Coffee i"), ("Moderate", "It depen"), ("Tea has ", "Tea is g")]
    assert [t.content for t in user.pairs[2].context] == [
        "Is coffee bad for me?", "Moderate coffee is fine for most adults.", "And tea?"]
    assert "Gender: Female" in user.demographics and "Lives in: Canada" in user.demographics
    assert "Religion: No religion" in user.demographics and "Education" not in user.demographics
    assert demographics_text({"user_id": "x"}) == ""


def test_raw_prism_folder_needs_five_pairs_per_user_by_default(tmp_path):
    history = [_prism_message(0, "user", "Q"), _prism_message(0, "model", "good", 80, True),
               _prism_message(0, "model", "bad", 10, False)]
    (tmp_path / "conversations.jsonl").write_text(json.dumps({"conversation_id": "c", "user_id": "u",
                                                              "conversation_history": history}) + "\n")
    with pytest.raises(PairFileError, match="at least 5 pairs"):
        load_eval_dataset(tmp_path)


def test_synthetic_population_follows_each_users_taste():
    dataset, users = synthetic_dataset(4, 6, seed=1)
    assert [len(u.pairs) for u in dataset.users] == [6] * 4
    with open("assets/pair_bank.jsonl", encoding="utf-8") as lines:
        bank = {json.loads(line)["prompt"]: json.loads(line) for line in lines}
    for user, data in zip(users, dataset.users, strict=True):
        for pair in data.pairs:
            row = bank[pair.prompt]
            preferred = row["responses"][user.poles[row["dimension"]]]["content"]
            assert pair.chosen.content == preferred
        assert data.demographics.startswith("Simulated user who prefers")
    assert synthetic_dataset(4, 6, seed=1)[0] == dataset


# ---- context scaling ---------------------------------------------------------------------------------------------
def test_slope_recovers_a_known_line_with_a_p_value():
    xs = [k for k in range(1, 11) for _ in range(20)]
    ys = [0.53 + 0.008 * x + (0.05 if i % 2 else -0.05) for i, x in enumerate(xs)]
    fit = fit_slope(xs, ys)
    assert fit.slope == pytest.approx(0.008, abs=1e-3) and fit.intercept == pytest.approx(0.53, abs=0.01)
    assert fit.p_value < 1e-6 and fit.n_points == 200
    flat = fit_slope([1, 1, 2, 2, 3, 3], [0.5, 0.6, 0.6, 0.5, 0.5, 0.6])
    assert flat.p_value > 0.5
    with pytest.raises(ValueError, match="2 context sizes"):
        fit_slope([1, 1, 1], [0, 1, 0])


def test_scaling_points_pool_pairs_per_size():
    records = [{"model": "m", "method": "synthesizeme", "n_context": k, "scores": [1.0] * k + [0.0] * (4 - k)}
               for k in (1, 2, 3) for _ in range(2)]
    points, fits = scaling_analysis(records)
    assert [(p.n_context, p.accuracy, p.n_users, p.n_pairs) for p in points] == [
        (1, 0.25, 2, 8), (2, 0.5, 2, 8), (3, 0.75, 2, 8)]
    assert fits[("m", "synthesizeme")].slope == pytest.approx(0.25)


def test_context_scaling_run_writes_figure_and_fit(tmp_path):
    dataset = group_by_user(population(2, 12), "scripted")
    lm, _ = scripted_lm()
    outcome = run_context_scaling(dataset, lm, tmp_path, RunConfig(methods=("memory",),
                                                                   settings=MethodSettings(num_threads=2)),
                                  sizes=[1, 3, 6, 50], model_label="scripted", progress=False)
    assert sorted({p.n_context for p in outcome.points}) == [1, 3, 6]  # 50 is more context than any user has
    assert ("scripted", "memory") in outcome.fits
    html = outcome.outputs["figure"].read_text()
    assert "plotly" in html.lower() and "context pairs" in html
    assert "% accuracy per context pair" in outcome.outputs["summary"].read_text()


# ---- CLI --------------------------------------------------------------------------------------------------------
def test_cli_reports_bad_input_and_unknown_methods(tmp_path, capsys):
    assert cli.main(["eval", "--dataset", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "file not found" in capsys.readouterr().err
    write_jsonl_pairs(population(1, 4), tmp_path / "d.jsonl")
    assert cli.main(["eval", "--dataset", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o"),
                     "--methods", "oracle"]) == 1
    assert "unknown method" in capsys.readouterr().err


def test_register_adds_both_commands():
    import argparse

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval-scaling", "--dataset", "d.jsonl", "--out", "o"])
    assert args.func is cli.cmd_eval_scaling and args.methods == "synthesizeme" and args.sizes == "1,2,3,5,8,12"
    args = parser.parse_args(["eval", "--dataset", "d.jsonl", "--out", "o", "--quick", "--methods", "all"])
    assert args.func is cli.cmd_eval and args.quick


# ---- the real packaged model --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_end_to_end_on_the_packaged_model(tmp_path, capsys):
    dataset, _ = synthetic_dataset(3, 5, seed=0)
    write_parquet_pairs([p for u in dataset.users for p in u.pairs], tmp_path / "three_users.parquet")
    out = tmp_path / "results"
    argv = ["eval", "--dataset", str(tmp_path / "three_users.parquet"), "--model", "offline", "--methods",
            "default,synthesizeme", "--quick", "--out", str(out), "--threads", "3", "--lm-threads", "4",
            "--cache-dir", str(tmp_path / "cache")]
    started = time.perf_counter()
    assert cli.main(argv) == 0
    seconds = time.perf_counter() - started
    printed = capsys.readouterr().out
    records = Ledger(out / LEDGER_NAME).records()
    assert len(records) == 6 and {r["method"] for r in records} == {"default", "synthesizeme"}
    for record in records:
        assert record["n_test"] == 2 and len(record["scores"]) == 2
        assert all(score in (0.0, 0.5, 1.0) for score in record["scores"])
        assert (out / record["artifact"]).exists()
    assert len(list(out.rglob("fit-all.synthesizeme.json"))) == 3
    assert "| personas + demos |" in printed and "| default judge |" in printed
    print(f"\nend-to-end: {seconds:.0f}s\n{(out / 'table.md').read_text()}")
    assert cli.main(argv) == 0  # rerun: everything is in the ledger
    assert "0 results computed this run, 6 in the ledger" in capsys.readouterr().out
