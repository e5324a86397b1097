"""docs/fidelity.md stays true: every file and symbol it names exists, every default it states is the code's default,
and each point it makes about this project has a test (named here)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from synth.pipeline import SynthesizeMe
from synth.steps import StepSettings

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "fidelity.md").read_text(encoding="utf-8")
REFERENCE = re.compile(r"`((?:synth|assets)/[\w/]+\.(?:py|json))`((?: `[\w.]+`,?)*)")
DEFAULT = re.compile(r"default `(\w+)=([^`]+)`")


def references() -> list[tuple[str, str | None]]:
    found = []
    for match in REFERENCE.finditer(PAGE):
        symbols = re.findall(r"`([\w.]+)`", match.group(2))
        found += [(match.group(1), symbol) for symbol in symbols] or [(match.group(1), None)]
    return found


def test_the_page_names_files_and_symbols():
    assert len(references()) >= 30 and len(DEFAULT.findall(PAGE)) >= 10


@pytest.mark.parametrize("path, symbol", references())
def test_every_named_file_and_symbol_exists(path, symbol):
    source = ROOT / path
    assert source.exists(), path
    if symbol is None:
        return
    text = source.read_text(encoding="utf-8")
    for part in symbol.split("."):  # Class.method: both are defined in the file
        assert re.search(rf"^\s*(?:def|class) {part}\b|^{part}\b.*=", text, re.M), (path, part)


@pytest.mark.parametrize("name, value", DEFAULT.findall(PAGE))
def test_every_stated_default_is_the_codes(name, value):
    settings = {f: getattr(StepSettings(), f) for f in StepSettings.__dataclass_fields__}
    parameters = {n: p.default for n, p in inspect.signature(SynthesizeMe.__init__).parameters.items()}
    assert name in settings or name in parameters, f"{name} is not a setting of SynthesizeMe"
    actual = settings[name] if name in settings else parameters[name]
    assert actual == ast.literal_eval(value), (name, actual, value)


# Each point this project makes about itself, and the test that shows it.
POINTS = {
    "the official split": "tests/test_data.py::"
                          "test_default_split_trains_on_the_first_70_percent_like_the_official_library",
    "flip": "tests/test_steps.py::test_flip_decides_where_the_chosen_reply_is_shown_and_leaves_the_other_coins_alone",
    "verified traces only": "tests/test_pipeline.py::test_a_guessed_verdict_is_never_a_verified_trace",
    "verdict policies": "tests/test_judge.py::test_each_policy_reads_verdicts_its_own_way",
    "official ties": "tests/test_pipeline.py::test_the_official_policy_turns_unclear_verdicts_into_ties_scored_wrong",
    "all verified traces": "tests/test_pipeline.py::test_a_candidate_holds_every_verified_trace",
    "no cap of 4": "tests/test_pipeline.py::test_demo_sets_grow_past_four_when_there_are_more_training_pairs",
    "persona never cut": "tests/test_judge.py::test_the_persona_survives_a_prompt_longer_than_the_context",
    "demos dropped lowest first": "tests/test_judge.py::test_demos_that_do_not_fit_leave_lowest_ranked_first",
    "engine never cuts the start": "tests/test_lm_prompts.py::"
                                   "test_a_long_prompt_loses_the_middle_of_its_last_turn_never_the_system_prompt_or_the_request",
    "tie rules and stop": "tests/test_steps.py::test_selection_rules_confidence_first_and_stop_at_score",
    "notes whole": "tests/test_steps.py::test_persona_notes_carry_the_whole_conversation_and_both_replies",
    "notes cut by tokens": "tests/test_steps.py::"
                           "test_persona_notes_over_budget_are_cut_by_tokens_in_the_middle_of_long_texts",
    "Θ optimized": "tests/test_optimize.py::"
                   "test_optimize_theta_runs_miprov2_over_instruction_and_demos_and_saves_one_loadable_program",
    "distilled rows": "tests/test_cli.py::test_eval_with_theta_adds_the_distilled_rows",
    "official rows": "tests/test_pipeline.py::test_fit_takes_official_dict_rows_with_their_roles_ids_flip_and_split",
    "official evaluate": "tests/test_pipeline.py::"
                         "test_evaluate_returns_mean_bounds_and_per_item_results_like_the_official_library",
    "official save": "tests/test_artifacts.py::test_the_official_save_layout_round_trips",
    "official files load": "tests/test_artifacts.py::test_a_save_written_by_the_official_library_loads",
    "untrusted files": "tests/test_artifacts.py::test_an_uploaded_artifact_cannot_set_huge_settings_or_demos",
    "Θ files are data": "tests/test_optimize.py::"
                        "test_a_theta_file_is_data_and_never_brings_its_own_model_or_call_settings",
}


@pytest.mark.parametrize("point, test", sorted(POINTS.items()))
def test_each_point_has_its_test(point, test):
    path, name = test.split("::")
    assert re.search(rf"^def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M), (point, test)
