"""synth.optimize: Θ optimised over many users with MIPROv2, and the persona metric it optimises."""

from __future__ import annotations

import dataclasses

import dspy
import pytest

from synth.data import PairFileError
from synth.optimize import optimize_theta, persona_metric, prepare_users
from synth.signatures import TolerantChatAdapter
from synth.steps import StepSettings
from synth.theta import load_theta
from tests.scripted import PERSONA, make_pairs, scripted_lm

TRICKS = {1, 4}


def users(n_users: int, n_pairs: int = 6):
    return [dataclasses.replace(p, user_id=f"user{u}") for u in range(n_users) for p in make_pairs(n_pairs, TRICKS)]


def test_optimize_theta_runs_miprov2_and_saves_a_loadable_program(tmp_path):
    lm, engine = scripted_lm()
    result = optimize_theta(users(4), lm=lm, output=tmp_path / "theta.json", auto=None, num_trials=2, num_threads=2)
    assert result.n_users == 4 and 0.0 <= result.baseline <= 1.0 and result.optimized == 1.0
    writer, theta_id = load_theta(tmp_path / "theta.json")
    assert theta_id == result.theta_id and writer.write.signature.instructions
    assert engine.calls["other"] > 0  # MIPROv2's proposer asked the prompt model for instructions


def test_persona_metric_scores_validation_pairs_in_both_orderings():
    lm, engine = scripted_lm()
    metric = persona_metric(StepSettings(num_threads=1))
    tricky = tuple(make_pairs(3, tricks={0, 1, 2}))
    example = dspy.Example(validation=tricky)
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        assert metric(example, dspy.Prediction(persona=PERSONA)) == 1.0  # the persona sees through the trick
        assert metric(example, dspy.Prediction(persona="")) == 0.0  # no persona: fooled in both orderings
    assert len(engine.seen_orders) == 2 * 2 * len(tricky)


def test_users_need_an_id_and_enough_pairs():
    lm, _ = scripted_lm()
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        tasks = prepare_users([*users(2), *users(1, n_pairs=3)], StepSettings(num_threads=2), max_users=5, seed=0)
    assert sorted(t.user_id for t in tasks) == ["user0", "user1"]  # user0's 3 extra pairs join its own 6
    with pytest.raises(PairFileError, match="field 'user_id'"):
        prepare_users([*make_pairs(4), dataclasses.replace(make_pairs(1)[0], user_id=None)], StepSettings(), 5, 0)
