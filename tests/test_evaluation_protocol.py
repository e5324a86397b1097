"""synth.evaluation.protocol: per-user splits, judging test pairs in both orderings, intervals, methods, settings."""

from __future__ import annotations

import pytest

from synth.evaluation.protocol import (
    JudgePrompt,
    MethodSettings,
    judge_test_pairs,
    parse_methods,
    split_user,
    summarize_scores,
)
from synth.steps import StepSettings
from tests.scripted import ScriptedEngine, make_pairs, scripted_lm

ALL_METHODS = ("default", "demographics", "memory", "demos", "personas", "synthesizeme")


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


def test_a_distilled_theta_brings_the_distilled_rows():
    assert parse_methods("personas,synthesizeme,default", distilled_theta="theta.json") == [
        "default", "personas", "synthesizeme", "personas-distilled", "synthesizeme-distilled"]
    assert parse_methods("all", distilled_theta="t.json")[-2:] == ["personas-distilled", "synthesizeme-distilled"]
    assert parse_methods("default", distilled_theta="theta.json") == ["default"]
    with pytest.raises(ValueError, match="--theta"):
        parse_methods("synthesizeme-distilled")


def distilled_theta(path) -> str:
    from synth.theta import PersonaWriter, save_theta

    writer = PersonaWriter()
    writer.predictor.signature = writer.predictor.signature.with_instructions("A Θ made with a larger model.")
    save_theta(writer, path)
    return str(path)


def test_distilled_rows_fit_with_the_given_theta(tmp_path):
    from synth.evaluation.datasets import EvalDataset
    from synth.evaluation.runner import RunConfig, run_evaluation
    from synth.theta import DEFAULT_THETA_PATH, theta_id
    from tests.scripted import make_population

    theta = distilled_theta(tmp_path / "distilled.json")
    lm, engine = scripted_lm()
    config = RunConfig(methods=tuple(parse_methods("personas,synthesizeme", distilled_theta=theta)),
                       settings=MethodSettings(num_threads=2, distilled_theta=theta))
    outcome = run_evaluation(EvalDataset.from_pairs(make_population(2), "scripted"), lm, tmp_path / "out", config,
                             model_label="m", progress=False)
    by_key = {(r["user_id"], r["method"]): r for r in outcome.records}
    assert len(by_key) == 8 and engine.calls["persona"] == 4  # two fits per user: the default Θ and the distilled
    for user in ("user-0", "user-1"):
        assert by_key[(user, "personas")]["theta_id"] == theta_id(DEFAULT_THETA_PATH)
        assert by_key[(user, "personas-distilled")]["theta_id"] == by_key[(user, "synthesizeme-distilled")][
            "theta_id"] == theta_id(theta)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| personas + distilled Θ |" in table and "| personas + demos + distilled Θ |" in table



# ---- settings ---------------------------------------------------------------------------------------------------
def test_method_settings_resolve_quick_like_synthesizeme():
    quick = MethodSettings(quick=True, num_candidates=5, num_threads=2, seed=3)
    assert quick.steps() == StepSettings(num_candidates=5, max_demos=2, reasoning_tokens=48, persona_tokens=120,
                                         num_threads=2, seed=3)
    assert MethodSettings().steps() == StepSettings(num_threads=8)
    model = quick.synthesizeme(lm=None)
    assert model.get_params()["quick"] and model.num_candidates == 5 and model.max_demos is None
