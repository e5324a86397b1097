"""synth.optimize: Θ optimised over many users with MIPROv2, and the persona metric it optimises."""

from __future__ import annotations

import dataclasses
import re

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


def test_optimize_theta_runs_miprov2_over_instruction_and_demos_and_saves_one_loadable_program(tmp_path):
    lm, engine = scripted_lm()
    result = optimize_theta(users(4), lm=lm, output=tmp_path / "theta.json", auto=None, num_trials=3, num_threads=2)
    assert result.n_users == 4 and 0.0 <= result.baseline <= 1.0 and result.optimized == 1.0
    writer, theta_id = load_theta(tmp_path / "theta.json")
    assert theta_id == result.theta_id and writer.predictor.signature.instructions
    assert isinstance(writer.write, dspy.ChainOfThought) and len(writer.predictor.demos) <= 2
    for demo in writer.predictor.demos:  # a worked example: notes, Θ's reasoning and the persona it wrote
        assert {"preference_notes", "reasoning", "persona"} <= set(demo)
    assert engine.calls["other"] > 0  # MIPROv2's proposer asked the prompt model for instructions
    with_demos = [r for r in engine.requests if sum("[[ ## preference_notes ## ]]" in m["content"] for m in r) > 1]
    assert with_demos  # Θ was tried with few-shot demos in its prompt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theta.json"]


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
    writer, _ = load_theta()
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        tasks = prepare_users([*users(2), *users(1, n_pairs=3)], StepSettings(num_threads=2), max_users=5, seed=0,
                              writer=writer)
    assert sorted(t.user_id for t in tasks) == ["user0", "user1"]  # user0's 3 extra pairs join its own 6
    assert all("Conversation:" in t.notes and "Chosen reply:" in t.notes for t in tasks)
    with pytest.raises(PairFileError, match="field 'user_id'"):
        prepare_users([*make_pairs(4), dataclasses.replace(make_pairs(1)[0], user_id=None)], StepSettings(), 5, 0,
                      writer)


def test_the_bundled_theta_is_a_chain_of_thought_program_and_an_old_one_is_refused(tmp_path):
    from synth.signatures import WritePersona
    from synth.theta import DEFAULT_THETA_PATH

    writer, theta_id = load_theta()
    assert isinstance(writer.write, dspy.ChainOfThought) and list(writer.predictor.signature.output_fields) == [
        "reasoning", "persona"]
    assert writer.predictor.signature.instructions == WritePersona.instructions and writer.predictor.demos == []
    assert theta_id == load_theta(DEFAULT_THETA_PATH)[1]
    old = tmp_path / "old_theta.json"  # the single-Predict Θ of earlier versions
    old.write_text('{"write": {"traces": [], "train": [], "demos": [], "signature": {"instructions": "x", "fields": '
                   '[]}, "lm": null}, "metadata": {"dependency_versions": {}}}')
    with pytest.raises(ValueError, match="not a saved persona-writing program"):
        load_theta(old)


def test_a_local_model_writes_theta_reasoning_then_the_persona_each_within_its_budget():
    """On a local engine Θ's persona continues its own answer after the reasoning (as the judge's verdict does), so
    a reasoning that runs long can never leave the persona unwritten."""
    import types

    from synth.lm.prompts import PromptFormat
    from synth.theta import PERSONA_MARKER
    from tests.scripted import ScriptedEngine, packaged_tokenizer

    class LocalScripted(ScriptedEngine):
        """A scripted engine with the local engine's ``generate`` over rendered prompts."""

        def __init__(self):
            super().__init__(prompts=PromptFormat(packaged_tokenizer(), max_input_tokens=4096))
            self.generated = []

        def generate(self, prompts, params):
            self.generated += list(zip(prompts, params, strict=True))
            return [types.SimpleNamespace(text=f" {PERSONA} ") for _ in prompts]

    engine = LocalScripted()
    lm = dspy.LM("local/scripted", engine=engine, temperature=0.0, max_tokens=512, cache=False)
    writer, _ = load_theta()
    with dspy.context(lm=lm, adapter=TolerantChatAdapter()):
        written = writer(preference_notes="Choice 1\nChosen reply: Short.\nOther reply: Long.", reasoning_tokens=40,
                         persona_tokens=30)
    assert written.persona == PERSONA and written.reasoning == "The chosen replies are the short ones."
    assert engine.max_tokens == [40]  # the reasoning's own budget, stopping at the persona's field
    ((prompt, params),) = engine.generated
    assert prompt.endswith(f"The chosen replies are the short ones.\n\n{PERSONA_MARKER}\n")
    assert params.max_new_tokens == 30 and "[[ ## completed ## ]]" in params.stop


def saved_theta(**changes) -> dict:
    """The bundled Θ file's JSON with ``changes`` made to its predictor's state."""
    import json

    from synth.theta import DEFAULT_THETA_PATH, THETA_PROGRAM_KEY

    saved = json.loads(DEFAULT_THETA_PATH.read_text(encoding="utf-8"))
    saved[THETA_PROGRAM_KEY].update(changes)
    return saved


@pytest.mark.parametrize("change, field", [
    ({"demos": 5}, "write.predict.demos"),
    ({"demos": ["a worked example"]}, "write.predict.demos[0]"),
    ({"demos": [{"preference_notes": "notes", "persona": 7}]}, "write.predict.demos[0].persona"),
    ({"demos": [{"preference_notes": "notes", "max_tokens": "9"}]}, "write.predict.demos[0].max_tokens"),
    ({"signature": {"instructions": 5, "fields": []}}, "write.predict.signature.instructions"),
    ({"signature": {"instructions": "Write.", "fields": "three"}}, "write.predict.signature.fields"),
    ({"signature": {"instructions": "Write.", "fields": [{"prefix": 1}] * 3}}, "write.predict.signature.fields[0]"),
])
def test_a_wrongly_typed_theta_file_is_named_by_field(tmp_path, change, field):
    import json

    from synth.theta import ThetaFileError

    path = tmp_path / "theta.json"
    path.write_text(json.dumps(saved_theta(**change)), encoding="utf-8")
    with pytest.raises(ThetaFileError, match=rf"theta\.json, field '{re.escape(field)}': "):
        load_theta(path)


def test_a_theta_file_is_data_and_never_brings_its_own_model_or_call_settings(tmp_path):
    import json

    from synth.theta import ThetaFileError

    path = tmp_path / "theta.json"
    state = saved_theta(lm={"model": "openai/someone-elses", "api_base": "http://elsewhere"},
                        config={"max_tokens": 50_000_000}, demos=[{"preference_notes": "n", "reasoning": "r",
                                                                   "persona": "The user likes it short.",
                                                                   "augmented": True}])
    path.write_text(json.dumps(state), encoding="utf-8")
    writer, _ = load_theta(path)
    assert writer.predictor.lm is None and writer.predictor.config == {}
    assert writer.predictor.demos[0]["persona"] == "The user likes it short."
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ThetaFileError, match=r"nested\.json: JSON nested too deeply"):
        load_theta(nested)
    with pytest.raises(ThetaFileError, match=r"missing\.json: file not found"):
        load_theta(tmp_path / "missing.json")
