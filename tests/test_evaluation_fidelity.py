"""synth.evaluation.fidelity: the stated-preference check (does the judge, given a user's persona, pick their own
stated preferences over a random other user's?), its pairing, its binomial test, its resumable run and its command.

The scripted judge, once the persona is in its instructions, always picks the shorter text, so which users "pass" is
known in advance from the lengths of their stated preferences and their foil's."""

from __future__ import annotations

import dataclasses
import json

import dspy
import pytest
from scipy.stats import binomtest

from synth.cli import main
from synth.cli.common import EXIT_FAILED, EXIT_OK
from synth.data import save_pairs
from synth.evaluation.datasets import (
    STATED_PREFERENCES_FIELD,
    EvalDataset,
    load_prism_raw,
    stated_preferences_text,
)
from synth.evaluation.fidelity import (
    LEDGER_NAME,
    METHOD_NAME,
    OTHER,
    OWN,
    TIE,
    check_dataset,
    outcome_of,
    pair_with_foils,
    run_persona_fidelity,
    split_methods,
    stated_preference_pair,
    summarize_outcomes,
)
from synth.evaluation.protocol import MethodSettings
from synth.evaluation.runner import Ledger, RunConfig, run_evaluation
from synth.fidelity import wilson_interval
from synth.steps import PairScore
from tests.openai_server import ScriptedOpenAIServer
from tests.scripted import ScriptedEngine, make_population, scripted_lm


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dspy, "cache", dspy.cache)


def stated_text(user: int) -> str:
    """Longer for higher user numbers, so the scripted judge prefers the lower-numbered user's text."""
    return "I want answers that are " + "really " * user + "short."


def population(n_users: int = 6, without: frozenset[int] = frozenset()) -> EvalDataset:
    pairs = make_population(n_users, 10)
    stated = {f"user-{u}": stated_text(u) for u in range(n_users) if u not in without}
    return EvalDataset.from_pairs(pairs, name="population", stated_preferences=stated)


CONFIG = RunConfig(methods=(), settings=MethodSettings(quick=True, num_threads=4), user_threads=3)


# ---- pairing ------------------------------------------------------------------------------------------------------
def test_each_user_is_paired_with_a_random_other_user_drawn_from_the_seed():
    stated = {f"u{i}": f"text {i}" for i in range(20)}
    foils = pair_with_foils(stated, seed=0)
    assert set(foils) == set(stated) and all(foil != user for user, foil in foils.items())
    assert pair_with_foils(stated, seed=0) == foils
    assert pair_with_foils(dict(reversed(list(stated.items()))), seed=0) == foils  # order does not matter
    assert pair_with_foils(stated, seed=1) != foils
    assert len(set(foils.values())) > 5  # spread over many users, not one fixed partner


def test_users_without_stated_preferences_or_with_the_same_text_are_never_foils():
    stated = {"a": "Be brief.", "b": "Be brief.", "c": "Explain everything.", "d": "   ", "e": ""}
    foils = pair_with_foils(stated, seed=3)
    assert foils == {"a": "c", "b": "c", "c": foils["c"]} and foils["c"] in {"a", "b"}
    assert pair_with_foils({"a": "Be brief.", "b": " Be brief. "}) == {}


def test_a_trial_is_a_pair_whose_chosen_reply_is_the_users_own_statement():
    pair = stated_preference_pair("u1", " Be brief. ", "Explain everything.")
    assert pair.chosen.content == "Be brief." and pair.rejected.content == "Explain everything."
    assert pair.user_id == "u1" and "what do you want from an AI assistant" in pair.prompt


# ---- the maths ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p_first, p_second, expected", [
    (0.9, 0.6, OWN), (0.9, 0.2, OWN), (0.2, 0.3, OTHER), (0.7, 0.3, TIE), (1.0, 0.0, TIE)])
def test_a_user_counts_for_their_own_statement_when_the_judge_leans_to_it_over_both_orders(p_first, p_second,
                                                                                             expected):
    score = PairScore(p_first >= 0.5, p_second >= 0.5, p_first, p_second)
    assert outcome_of(score) == expected


def test_summary_is_a_sign_test_against_one_half():
    outcomes = [OWN] * 9 + [OTHER] + [TIE] * 3
    summary = summarize_outcomes("m", outcomes, ordering_scores=[1.0] * 9 + [0.0] + [0.5] * 3)
    assert (summary.n_users, summary.own, summary.other, summary.ties) == (13, 9, 1, 3)
    assert summary.share == 0.9 and (summary.ci_low, summary.ci_high) == wilson_interval(9, 10)
    assert summary.p_value == pytest.approx(binomtest(9, 10, 0.5).pvalue) == pytest.approx(0.021484375)
    assert summary.ordering_share == pytest.approx((9 + 1.5) / 13)
    balanced = summarize_outcomes("m", [OWN, OTHER] * 10)
    assert balanced.share == 0.5 and balanced.p_value == pytest.approx(1.0)
    worse = summarize_outcomes("m", [OTHER] * 8)
    assert worse.share == 0.0 and worse.p_value == pytest.approx(2 * 0.5 ** 8)  # two-sided
    empty = summarize_outcomes("m", [TIE, TIE])
    assert empty.share is None and empty.p_value is None and empty.ci_low is None and empty.ties == 2


def test_the_methods_flag_separates_this_check_from_the_per_user_methods():
    assert split_methods("default,persona-fidelity, synthesizeme") == ("default,synthesizeme", True)
    assert split_methods("Persona-Fidelity") == ("", True)
    assert split_methods("all") == ("all", False)


# ---- stated preferences in the data -------------------------------------------------------------------------------
def test_prism_survey_fields_become_stated_preferences(tmp_path):
    row = {"user_id": "user-9", "system_string": "  Be honest and never preachy. ",
           "stated_prefs": {"values": 40, "creativity": 10, "fluency": 75.5, "factuality": 100, "diversity": 55,
                            "safety": 100, "personalisation": True, "helpfulness": 90, "other": 80,
                            "other_text": "Uses metric units"}}
    text = stated_preferences_text(row)
    assert text.startswith("Be honest and never preachy.\n\n")
    lines = text.splitlines()[3:]
    assert lines[:3] == ["- produces factual and informative responses: 100",
                         "- produces responses that are safe and do not risk harm to myself and others: 100",
                         "- produces responses that are helpful and relevant to my requests: 90"]
    assert "- Uses metric units: 80" in lines
    assert "- produces responses that are well-written and coherent: 75.5" in lines
    assert lines[-1] == "- produces responses that are creative and inspiring: 10"
    assert not any("personalised" in line for line in lines)  # not a number: left out
    assert stated_preferences_text({"user_id": "x"}) == ""
    assert stated_preferences_text({"system_string": "Be kind."}) == "Be kind."

    message = {"turn": 0, "role": "user", "content": "Hi?"}
    replies = [{"turn": 0, "role": "model", "content": text, "score": score, "if_chosen": score == 90}
               for text, score in (("Hello!", 90), ("Go away.", 10))]
    conversation = {"conversation_id": "c1", "user_id": "user-9", "conversation_history": [message, *replies]}
    (tmp_path / "conversations.jsonl").write_text(json.dumps(conversation) + "\n")
    (tmp_path / "survey.jsonl").write_text(json.dumps(row) + "\n")
    dataset = load_prism_raw(tmp_path, min_pairs=1)
    assert dataset.has_stated_preferences and dataset.users[0].stated_preferences == text


def test_a_per_row_field_carries_stated_preferences_in_any_file():
    pairs = [dataclasses.replace(p, extra={STATED_PREFERENCES_FIELD: f"Text of {p.user_id}"})
             for p in make_population(2, 3)]
    dataset = EvalDataset.from_pairs(pairs, name="rows")
    assert [u.stated_preferences for u in dataset.users] == ["Text of user-0", "Text of user-1"]
    assert not EvalDataset.from_pairs(make_population(2, 3), name="none").has_stated_preferences


def test_a_dataset_without_stated_preferences_gets_a_clear_message(tmp_path):
    lm, engine = scripted_lm()
    dataset = EvalDataset.from_pairs(make_population(3, 10), name="plain")
    with pytest.raises(ValueError, match=r"plain: no user has stated preferences.*survey\.jsonl.*'stated_preferences'"):
        run_persona_fidelity(dataset, lm, tmp_path / "out", CONFIG, model_label="m", progress=False)
    one = population(3, without=frozenset({1, 2}))
    with pytest.raises(ValueError, match="at least two users with different stated preferences"):
        check_dataset(one)
    assert sum(engine.calls.values()) == 0 and not (tmp_path / "out").exists()


# ---- the run ------------------------------------------------------------------------------------------------------
def test_the_check_judges_each_user_against_their_foil_and_resumes(tmp_path):
    lm, engine = scripted_lm()
    dataset = population(6, without=frozenset({5}))
    outcome = run_persona_fidelity(dataset, lm, tmp_path, CONFIG, model_label="scripted", progress=False)
    foils = pair_with_foils({u.user_id: u.stated_preferences or "" for u in dataset.users}, CONFIG.settings.seed)
    expected = {user: OWN if len(stated_text(int(user[5:]))) < len(stated_text(int(foil[5:]))) else OTHER
                for user, foil in foils.items()}
    records = {r["user_id"]: r for r in outcome.records}
    assert set(records) == set(expected) == {f"user-{u}" for u in range(5)}
    assert {user: r["outcome"] for user, r in records.items()} == expected
    assert all(r["method"] == METHOD_NAME and r["foil_user_id"] == foils[user] and r["persona"]
               for user, r in records.items())
    assert outcome.skipped_users == ["user user-5: no stated preferences"]
    (summary,) = outcome.summaries
    own = list(expected.values()).count(OWN)
    assert (summary.model, summary.n_users, summary.own, summary.other) == ("scripted", 5, own, 5 - own)
    assert summary.p_value == pytest.approx(binomtest(own, 5, 0.5).pvalue)
    table = outcome.outputs["fidelity_table"].read_text()
    assert f"| scripted | 5 | {own} | {5 - own} | 0 |" in table and "p (binomial, vs 50%)" in table
    assert outcome.outputs["fidelity_users"].read_text().count("\n") == 6
    assert outcome.outputs["fidelity_results"].read_text().startswith("model,n_users,own,other,ties,share")
    calls = sum(engine.calls.values())
    again = run_persona_fidelity(dataset, lm, tmp_path, CONFIG, model_label="scripted", progress=False)
    assert again.computed == 0 and sum(engine.calls.values()) == calls  # everything was in the ledger
    assert len(Ledger(tmp_path / LEDGER_NAME).records()) == 5


def test_the_check_reads_the_personas_the_other_methods_fitted(tmp_path):
    lm, engine = scripted_lm()
    dataset = population(3)
    run_evaluation(dataset, lm, tmp_path, dataclasses.replace(CONFIG, methods=("personas",)), model_label="scripted",
                   progress=False)
    written = engine.calls["persona"]
    assert written == 3
    run_persona_fidelity(dataset, lm, tmp_path, CONFIG, model_label="scripted", progress=False)
    assert engine.calls["persona"] == written  # loaded from the saved fits, not fitted again


def test_users_whose_fit_wrote_no_persona_are_recorded_but_not_judged(tmp_path):
    lm, _ = scripted_lm(persona="")
    outcome = run_persona_fidelity(population(3), lm, tmp_path, CONFIG, model_label="scripted", progress=False)
    assert [r["outcome"] for r in outcome.records] == [None] * 3
    (summary,) = outcome.summaries
    assert summary.n_users == 0 and summary.skipped_no_persona == 3 and summary.p_value is None
    assert "3 users had no persona" in outcome.outputs["fidelity_table"].read_text()


# ---- the command --------------------------------------------------------------------------------------------------
@pytest.fixture
def server():
    with ScriptedOpenAIServer(ScriptedEngine(with_scores=False)) as running:
        yield running


def eval_argv(server, data, out, methods: str) -> list[str]:
    return ["eval", "--dataset", str(data), "-o", str(out), "--methods", methods, "--quick", "--threads", "2",
            "--parallel-users", "2", "--quiet", "--model", "openai/scripted-judge", "--api-base", server.base_url,
            "--api-key", "local-test", "--no-cache"]


def test_synth_eval_runs_persona_fidelity_next_to_the_paper_methods(server, tmp_path, capsys):
    data = tmp_path / "users.jsonl"
    pairs = [dataclasses.replace(p, extra={STATED_PREFERENCES_FIELD: stated_text(int(p.user_id[5:]))})
             for p in make_population(4, 10)]
    save_pairs(pairs, data)
    assert main(eval_argv(server, data, tmp_path / "out", f"personas,{METHOD_NAME}")) == EXIT_OK
    printed = capsys.readouterr().out
    assert "| just personas |" in printed and "share of own (95% CI)" in printed
    assert "| openai/scripted-judge | 4 |" in printed and "4 users judged this run" in printed
    requests = server.requests
    assert main(eval_argv(server, data, tmp_path / "out", METHOD_NAME)) == EXIT_OK  # alone, and resumed
    assert server.requests == requests and "0 users judged this run, 4 in the ledger" in capsys.readouterr().out


def test_synth_eval_refuses_persona_fidelity_on_data_without_stated_preferences(server, tmp_path, capsys):
    data = tmp_path / "users.jsonl"
    save_pairs(make_population(3, 10), data)
    assert main(eval_argv(server, data, tmp_path / "out", f"default,{METHOD_NAME}")) == EXIT_FAILED
    assert "no user has stated preferences" in capsys.readouterr().err
    assert server.requests == 0 and not (tmp_path / "out").exists()  # refused before any model work
