"""synth.artifacts: a loaded judge is data, never configuration (hostile files first), and the official library's save
layout, both ways."""

from __future__ import annotations

import json

import pytest

from synth.artifacts import OFFICIAL_PROGRAM_KEY, ArtifactError, ArtifactLimits
from synth.pipeline import SynthesizeMe
from tests.scripted import PERSONA, make_pairs, scripted_lm

DEMO = {"conversation": "User: plan my day?", "first_reply": "Gym, then work.", "second_reply": "A long plan.",
        "reasoning": "Short wins.", "preferred": "First"}
LABELLED = {"conversation": "User: a poem?", "first_reply": "A sonnet.", "second_reply": "Two lines.",
            "preferred": "Second"}


@pytest.fixture(scope="module")
def artifact() -> dict:
    lm, _ = scripted_lm()
    model = SynthesizeMe(lm=lm, num_threads=4, quick=True).fit(make_pairs(8, {1}))
    return {**model.artifact_, "demos": [DEMO, LABELLED]}


# ---- hostile uploads -------------------------------------------------------------------------------------------------
def test_an_uploaded_artifact_cannot_set_huge_settings_or_demos(artifact):
    hostile = {**artifact, "config": {**artifact["config"], "reasoning_tokens": 50_000_000, "max_turn_chars": 10**9,
                                      "persona_tokens": 10**6, "num_threads": 5_000, "num_candidates": 10**4},
               "demos": [{**DEMO, "first_reply": "x" * 3_000_000}] + [DEMO] * 200}
    lm, engine = scripted_lm()
    model = SynthesizeMe.from_artifact(hostile, lm=lm)
    limits = ArtifactLimits()
    assert (model.settings_.reasoning_tokens, model.settings_.max_turn_chars, model.settings_.persona_tokens,
            model.settings_.num_threads, model.settings_.num_candidates) == (
        limits.reasoning_tokens, limits.max_turn_chars, limits.persona_tokens, limits.num_threads,
        limits.num_candidates)
    assert len(model.demos_) == limits.demos and len(model.demos_[0]["first_reply"]) <= limits.demo_chars
    assert model.clamped_["reasoning_tokens"] == (50_000_000, limits.reasoning_tokens)
    assert model.clamped_["demos"] == (201, limits.demos) and "demo_chars" in model.clamped_
    model.predict_proba("Plan my day?", "Gym.", "A very long plan with many digressions.")
    assert engine.max_tokens and max(engine.max_tokens) <= limits.reasoning_tokens  # what reaches the model
    assert max(len(m["content"]) for request in engine.requests for m in request) < 200_000
    assert model.artifact_["config"]["reasoning_tokens"] == limits.reasoning_tokens  # a re-save keeps the bounds


def test_a_caller_can_pass_its_own_limits(artifact):
    tight = ArtifactLimits(reasoning_tokens=32, demos=1)
    model = SynthesizeMe.from_artifact(artifact, limits=tight)
    assert model.settings_.reasoning_tokens == 32 and len(model.demos_) == 1
    roomy = SynthesizeMe.from_artifact({**artifact, "config": {**artifact["config"], "reasoning_tokens": 2048}},
                                       limits=ArtifactLimits(reasoning_tokens=4096))
    assert roomy.settings_.reasoning_tokens == 2048 and roomy.clamped_ == {}


@pytest.mark.parametrize("change, field", [
    ({"persona": 42}, "persona"),
    ({"persona": ["The user"]}, "persona"),
    ({"persona": "x" * 9000}, "persona"),
    ({"demos": {"0": DEMO}}, "demos"),
    ({"demos": ["a demo"]}, "demos[0]"),
    ({"demos": [{**DEMO, "first_reply": 7}]}, "demos[0].first_reply"),
    ({"demos": [DEMO, {**DEMO, "reasoning": {"text": "nested"}}]}, "demos[1].reasoning"),
    ({"demos": [{**DEMO, "preferred": "Both"}]}, "demos[0].preferred"),
    ({"demos": [{k: v for k, v in DEMO.items() if k != "conversation"}]}, "demos[0].conversation"),
    ({"config": []}, "config"),
    ({"config": {"reasoning_tokens": "a lot"}}, "config.reasoning_tokens"),
    ({"config": {"reasoning_tokens": True}}, "config.reasoning_tokens"),
    ({"config": {"num_threads": -4}}, "config.num_threads"),
    ({"config": {"verdict_policy": "always First"}}, "config.verdict_policy"),
    ({"config": {"stop_at_score": 80}}, "config.stop_at_score"),
])
def test_wrongly_typed_fields_are_named_never_a_crash_later(artifact, change, field):
    with pytest.raises(ArtifactError) as caught:
        SynthesizeMe.from_artifact({**artifact, **change}, source="upload.json")
    assert caught.value.field_name == field and str(caught.value).startswith(f"upload.json, field '{field}'")


def test_files_that_are_not_artifacts_are_refused_with_the_path(tmp_path):
    for name, content in [("list.json", "[1, 2]"), ("deep.json", "[" * 100_000 + "]" * 100_000),
                          ("bad.json", "{not json"), ("empty.json", "")]:
        path = tmp_path / name
        path.write_text(content)
        with pytest.raises(ArtifactError, match=str(path)):
            SynthesizeMe.load(path)


# ---- the official library's layout ---------------------------------------------------------------------------------
def test_the_official_save_layout_round_trips(artifact, tmp_path):
    model = SynthesizeMe.from_artifact({**artifact, "user_id": "user-7"})
    written = model.save(f"{tmp_path}/saved/")  # a folder path: the official layout
    assert written == tmp_path / "saved" / "user-7.json"
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["user-7.json", "user-7_persona.txt"]
    assert (tmp_path / "saved" / "user-7_persona.txt").read_text() == PERSONA
    saved = json.loads(written.read_text())
    state = saved[OFFICIAL_PROGRAM_KEY]
    assert set(saved) == {OFFICIAL_PROGRAM_KEY, "metadata"} and "dependency_versions" in saved["metadata"]
    assert state["demos"][0] == {"augmented": True, "conversation": DEMO["conversation"],
                                 "first_completion": DEMO["first_reply"], "second_completion": DEMO["second_reply"],
                                 "reasoning": DEMO["reasoning"], "preference": "First"}
    assert "augmented" not in state["demos"][1] and len(state["signature"]["fields"]) == 5
    loaded = SynthesizeMe.load(tmp_path / "saved")
    assert loaded.get_persona() == PERSONA and loaded.get_demos() == model.get_demos()
    assert loaded.user_id_ == "user-7"
    with pytest.raises(ValueError, match="path separators"):
        SynthesizeMe.from_artifact({**artifact, "user_id": "../escape"}).save(f"{tmp_path}/other/")


def test_a_save_written_by_the_official_library_loads(tmp_path):
    """The official ``save``'s files as DSPy writes them (built here; the official program's own instruction text is
    not copied): a bootstrapped demo under the signature's names, a labelled one with the raw row's names."""
    program = {OFFICIAL_PROGRAM_KEY: {
        "traces": [], "train": [],
        "demos": [{"augmented": True, "conversation": "[user]: Plan my week", "first_completion": "[assistant]: Gym.",
                   "second_completion": "[assistant]: A long plan.", "reasoning": "They like it short.",
                   "preference": "First"},
                  {"conversation": "[user]: Tell a joke", "completion_one": "[assistant]: A pun.",
                   "completion_two": "[assistant]: A story.", "chosen": "Second", "index": 3,
                   "conversation_id": "u42_3", "type": "default", "dataset": "default", "user_id": "u42"}],
        "signature": {"instructions": "(the official judge's instructions)",
                      "fields": [{"prefix": name, "description": name} for name in
                                 ("Conversation:", "First Completion:", "Second Completion:", "Reasoning:",
                                  "Preference:")]},
        "lm": None},
        "metadata": {"dependency_versions": {"python": "3.11", "dspy": "2.6.5", "cloudpickle": "3.0"}}}
    (tmp_path / "u42.json").write_text(json.dumps(program))
    (tmp_path / "u42_persona.txt").write_text("The user likes brief, dry answers.")
    lm, _ = scripted_lm()
    model = SynthesizeMe.load(tmp_path, lm=lm)
    assert model.user_id_ == "u42" and model.get_persona() == "The user likes brief, dry answers."
    demos = model.get_demos()
    assert demos[0] == {"conversation": "[user]: Plan my week", "first_reply": "[assistant]: Gym.",
                        "second_reply": "[assistant]: A long plan.", "reasoning": "They like it short.",
                        "preferred": "First"}
    assert demos[1]["preferred"] == "Second" and "reasoning" not in demos[1]
    assert model.predict_pairwise("Plan my day?", "Gym.", "A long plan with many digressions.") == 1
    (tmp_path / "u43_persona.txt").write_text("Another user.")
    with pytest.raises(ArtifactError, match="pass user_id"):
        SynthesizeMe.load(tmp_path)
    assert SynthesizeMe.load(tmp_path, user_id="u42").get_persona().startswith("The user likes brief")
