"""The three steps with a scripted LM whose answers are known."""

from __future__ import annotations

import json
import threading

import pytest

from synth.events import CandidateScored, DemosChosen, FitFinished, PersonaReady, Stage, StageStarted, TraceBootstrapped
from synth.parallel import FitCancelled
from synth.pipeline import DefaultJudge, SynthesizeMe
from tests.scripted import PERSONA, make_pairs, scripted_lm

TRICKS = {1, 4}


def fit(seed: int = 0, with_scores: bool = True, n: int = 10, **kwargs):
    lm, engine = scripted_lm(with_scores=with_scores, **kwargs)
    events = []
    model = SynthesizeMe(lm=lm, seed=seed, num_threads=4).fit(make_pairs(n, TRICKS), callback=events.append)
    return model, engine, events


def test_verification_keeps_only_traces_that_match_the_user():
    model, _, _ = fit()
    bootstrap = [t for t in model.artifact_["traces"] if t["stage"] == "bootstrap"]
    assert len(bootstrap) == 7  # the first ⌊0.7 × 10⌋ pairs train
    for trace in bootstrap:
        assert trace["kept"] == (trace["verdict"] == trace["user_choice"])
        assert trace["kept"] == (trace["pair_index"] not in TRICKS)
    kept_ids = {i for i, t in enumerate(bootstrap) if t["kept"]}
    for candidate in model.artifact_["candidates"]:
        if candidate["stage"] == "bootstrap" and candidate["kind"] in ("bootstrapped", "all-verified"):
            assert set(candidate["trace_ids"]) <= kept_ids  # rejected reasoning never becomes a demo


def test_best_candidate_wins_and_persona_flows_into_step_three():
    model, engine, _ = fit()
    candidates = model.artifact_["candidates"]
    for stage in ("bootstrap", "demos"):
        ranked = [c for c in candidates if c["stage"] == stage]
        chosen = model.artifact_["chosen"][stage]
        best = max(ranked, key=lambda c: (c["accuracy"], c["mean_p_correct"], -c["candidate_id"]))  # confidence
        assert chosen == best["candidate_id"]
    assert model.get_persona() == PERSONA
    # with the persona in its instructions the judge is never tricked: every step-3 trace is kept
    assert all(t["kept"] for t in model.artifact_["traces"] if t["stage"] == "demos")
    assert model.artifact_["validation_accuracy"] == 1.0
    assert any(has_persona for *_, has_persona in engine.seen_orders)
    assert len(model.get_demos()) == len(candidates_demos(model))


def candidates_demos(model):
    chosen = model.artifact_["chosen"]["demos"]
    return next(c for c in model.artifact_["candidates"] if c["stage"] == "demos" and c["candidate_id"] == chosen)[
        "trace_ids"]


def test_validation_pairs_are_scored_in_both_orderings():
    model, engine, _ = fit()
    validation = make_pairs(10, TRICKS)[7:]
    n_candidates = len([c for c in model.artifact_["candidates"] if c["stage"] == "bootstrap"])
    for pair in validation:
        chosen, rejected = pair.chosen.content, pair.rejected.content
        forward = sum(1 for f, s, p in engine.seen_orders if (f, s, p) == (chosen, rejected, False))
        backward = sum(1 for f, s, p in engine.seen_orders if (f, s, p) == (rejected, chosen, False))
        assert forward == backward == n_candidates
    for candidate in model.artifact_["candidates"]:
        assert len(candidate["per_pair_scores"]) == 3


def test_same_seed_reproduces_and_other_seed_differs():
    first, _, _ = fit(seed=3)
    again, _, _ = fit(seed=3)
    other, _, _ = fit(seed=11)
    assert first.get_persona() == again.get_persona()
    assert first.get_demos() == again.get_demos()
    strip = lambda m: [dict(c.items()) for c in m.artifact_["candidates"]]  # noqa: E731
    assert strip(first) == strip(again)
    assert [c["trace_ids"] for c in strip(first)] != [c["trace_ids"] for c in strip(other)]
    learned = ("traces", "candidates", "chosen", "persona_notes", "persona", "demos", "verdict_sources")
    assert all(first.artifact_[key] == again.artifact_[key] for key in learned)
    parsed, _, _ = fit(seed=3, with_scores=False)  # parsed verdicts, calls finishing in any order
    parsed_again, _, _ = fit(seed=3, with_scores=False)
    assert all(parsed.artifact_[key] == parsed_again.artifact_[key] for key in learned)


def test_events_arrive_in_stage_order_with_traces_and_candidates():
    _, _, events = fit()
    stages = [e.stage for e in events if isinstance(e, StageStarted)]
    assert stages == [Stage.BOOTSTRAP, Stage.PERSONA, Stage.DEMOS]
    assert sum(isinstance(e, TraceBootstrapped) for e in events) == 14
    assert any(isinstance(e, TraceBootstrapped) and not e.kept for e in events)
    assert sum(isinstance(e, CandidateScored) for e in events) >= 4
    assert isinstance(events[-1], FitFinished) and isinstance(events[-2], DemosChosen)
    assert any(isinstance(e, PersonaReady) and e.persona == PERSONA for e in events)


def test_malformed_verdicts_are_retried_then_recorded_as_fallbacks():
    model, engine, _ = fit(with_scores=False, malformed_verdicts=2)
    # two malformed answers: even if both hit one call, its two retries resolve it; nothing dropped
    assert engine.malformed_verdicts == 0
    assert model.artifact_["verdict_fallbacks"] == 0
    assert all(t["verdict"] in ("First", "Second") for t in model.artifact_["traces"])
    assert sum(model.artifact_["verdict_sources"].values()) > 0
    assert model.artifact_["verdict_policy"] == "parse" and model.artifact_["config"]["verdict_policy"] is None
    stubborn, _, _ = fit(with_scores=False, malformed_verdicts=10_000)
    assert stubborn.artifact_["verdict_fallbacks"] > 0
    assert all(t["verdict"] in ("First", "Second") for t in stubborn.artifact_["traces"])
    assert {t["verdict_source"] for t in stubborn.artifact_["traces"]} == {"fallback"}


def test_predict_evaluate_and_artifact_round_trip(tmp_path):
    model, _, _ = fit()
    pair = make_pairs(12)[11]
    assert model.predict_pairwise(pair.context, pair.chosen, pair.rejected) == 1
    assert model.predict_pairwise(pair.context, pair.rejected, pair.chosen) == -1
    assert model.predict_proba(pair.context, pair.chosen, pair.rejected) == pytest.approx(0.8)
    result = model.evaluate(make_pairs(14)[10:])
    assert result.accuracy == 1.0 and result.n_judgments == 8 and result.ci_low <= 1.0 <= result.ci_high
    path = tmp_path / "artifact.json"
    model.save(path)
    saved = json.loads(path.read_text())
    for key in ("persona", "demos", "traces", "candidates", "theta_id", "model", "config", "timings", "lm_usage"):
        assert key in saved
    assert saved["lm_usage"]["lm_calls"] > 0
    lm, _ = scripted_lm()
    loaded = SynthesizeMe.load(path, lm=lm)
    assert loaded.get_persona() == model.get_persona() and loaded.get_demos() == model.get_demos()
    messages = loaded.get_llm_judge_prompt()
    assert messages[0]["role"] == "system" and PERSONA in messages[0]["content"]
    assert "{first_reply}" in messages[-1]["content"]
    assert PERSONA in loaded.get_generation_prompt()


def test_default_judge_is_tricked_where_the_persona_judge_is_not():
    lm, _ = scripted_lm()
    tricky = make_pairs(6, tricks={0, 1, 2, 3, 4, 5})
    assert DefaultJudge(lm=lm).fit().evaluate(tricky).accuracy == 0.0
    model, _, _ = fit()
    assert model.evaluate(tricky).accuracy == 1.0


def test_fit_events_streams_and_cancels():
    lm, _ = scripted_lm()
    model = SynthesizeMe(lm=lm, num_threads=2)
    stream = model.fit_events(make_pairs(10, TRICKS))
    first = next(stream)
    assert isinstance(first, StageStarted)
    stream.close()  # closing the iterator cancels the worker and joins it
    assert not hasattr(model, "persona_") and not hasattr(model, "artifact_")  # nothing half-fitted is kept

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(FitCancelled):
        list(SynthesizeMe(lm=lm).fit_events(make_pairs(10), cancel=cancel))


def test_quick_mode_shrinks_the_search():
    lm, _engine = scripted_lm()
    model = SynthesizeMe(lm=lm, quick=True).fit(make_pairs(8, TRICKS))
    assert model.settings_.num_candidates == 3 and model.settings_.reasoning_tokens == 48
    assert model.num_candidates is None and model.reasoning_tokens is None  # parameters stay as given
    assert model.artifact_["config"]["quick"] is True and model.artifact_["config"]["max_demos"] == 2
    assert len([c for c in model.artifact_["candidates"] if c["stage"] == "bootstrap"]) <= 6  # 3 fixed + 3 draws
    assert max(len(c["trace_ids"]) for c in model.artifact_["candidates"]) <= 2


def test_explicit_values_win_over_quick_and_are_never_rewritten():
    lm, _ = scripted_lm()
    model = SynthesizeMe(lm=lm, num_candidates=7, quick=True, num_threads=2)
    assert model.num_candidates == 7 and model.quick  # __init__ stores, fit resolves
    model.fit(make_pairs(6))
    assert (model.settings_.num_candidates, model.settings_.max_demos, model.settings_.persona_tokens) == (7, 2, 120)
    assert model.get_params()["num_candidates"] == 7 and model.get_params()["max_demos"] is None
    default = SynthesizeMe(lm=lm, num_threads=2).fit(make_pairs(6))
    assert (default.settings_.num_candidates, default.settings_.max_demos, default.settings_.reasoning_tokens,
            default.settings_.persona_tokens) == (10, None, 256, 320)


def test_the_default_lm_is_resolved_without_writing_the_lm_parameter(monkeypatch):
    import synth.pipeline

    lm, _ = scripted_lm()
    built = []
    monkeypatch.setattr(synth.pipeline, "build_lm", lambda: built.append(lm) or lm)
    model = SynthesizeMe(num_threads=2).fit(make_pairs(6))
    assert model.lm is None and model.lm_ is lm and len(built) == 1
    pair = make_pairs(7)[6]
    assert model.predict_pairwise(pair.context, pair.chosen, pair.rejected) == 1 and len(built) == 1  # lm_ reused
    assert DefaultJudge().predict_pairwise(pair.context, pair.chosen, pair.rejected) == 1 and len(built) == 2


def test_get_params_set_params_and_sklearn_clone():
    from sklearn.base import clone

    lm, _ = scripted_lm()
    model = SynthesizeMe(lm=lm, num_candidates=5, seed=4, quick=True)
    params = model.get_params()
    assert set(params) == {"lm", "user_id", "num_candidates", "max_demos", "max_labeled_demos", "seed", "theta",
                           "train_val_ratio", "reasoning_tokens", "persona_tokens", "max_turn_chars", "num_threads",
                           "quick", "verdict_policy", "tie_break", "stop_at_score"}
    assert params["num_candidates"] == 5 and params["seed"] == 4 and params["max_demos"] is None
    model.fit(make_pairs(6))
    copy = clone(model)
    assert copy is not model and copy.get_params() == params and copy.lm is lm  # the LM is shared, not copied
    assert not hasattr(copy, "persona_") and not hasattr(copy, "settings_")  # a clone is unfitted
    assert copy.set_params(seed=9, max_demos=1) is copy and copy.seed == 9 and copy.max_demos == 1
    assert model.seed == 4
    with pytest.raises(ValueError, match="invalid parameter 'depth'"):
        copy.set_params(depth=3)
    judge = DefaultJudge(lm=lm, reasoning_tokens=64)
    assert clone(judge).get_params() == {"lm": lm, "reasoning_tokens": 64, "max_turn_chars": 2000,
                                         "num_threads": None, "seed": 0, "verdict_policy": None}


def test_loaded_artifact_keeps_the_settings_it_was_fitted_with(tmp_path):
    lm, _ = scripted_lm()
    model = SynthesizeMe(lm=lm, quick=True, num_threads=2).fit(make_pairs(6))
    model.save(tmp_path / "a.json")
    loaded = SynthesizeMe.load(tmp_path / "a.json")  # no LM needed to read it
    assert loaded.settings_ == model.settings_ and loaded.lm is None
    assert loaded.get_params()["reasoning_tokens"] == 48 and loaded.quick
    assert loaded.get_llm_judge_prompt() == model.get_llm_judge_prompt()
    with pytest.raises(RuntimeError, match="call fit"):
        SynthesizeMe(lm=lm).get_persona()


def test_concurrent_fits_in_one_process_keep_their_own_lm_and_results():
    from concurrent.futures import ThreadPoolExecutor

    lm_short, engine_short = scripted_lm()
    lm_other, engine_other = scripted_lm(persona="The user enjoys thorough, detailed replies.")

    def run(lm):
        return SynthesizeMe(lm=lm, num_threads=4).fit(make_pairs(10, TRICKS))

    with ThreadPoolExecutor(2) as pool:
        short, other = pool.map(run, [lm_short, lm_other])
    assert short.get_persona() == PERSONA
    assert other.get_persona() == "The user enjoys thorough, detailed replies."
    assert short.artifact_["lm_usage"]["lm_calls"] == engine_short.calls["judge"] + engine_short.calls["persona"]
    assert other.artifact_["lm_usage"]["lm_calls"] == engine_other.calls["judge"] + engine_other.calls["persona"]


# ---- the paper's search, verified verdicts -------------------------------------------------------------------------
def test_a_candidate_holds_every_verified_trace():
    model, _, _ = fit()
    for stage in ("bootstrap", "demos"):
        kept = [i for i, t in enumerate(t for t in model.artifact_["traces"] if t["stage"] == stage) if t["kept"]]
        everything = [c for c in model.artifact_["candidates"] if c["stage"] == stage and c["kind"] == "all-verified"]
        assert len(everything) == 1 and everything[0]["trace_ids"] == kept


def test_demo_sets_grow_past_four_when_there_are_more_training_pairs():
    model, _, _ = fit(n=24)  # 16 training pairs
    sizes = [len(c["trace_ids"]) for c in model.artifact_["candidates"] if c["kind"] != "labels-only"]
    assert max(sizes) > 4 and sum(size > 4 for size in sizes) >= 3


def test_a_guessed_verdict_is_never_a_verified_trace():
    model, _, _ = fit(with_scores=False, malformed_verdicts=10_000)
    traces = model.artifact_["traces"]
    assert {t["verdict_source"] for t in traces} == {"fallback"}
    assert any(t["verdict"] == t["user_choice"] for t in traces)  # some guesses happen to match the user...
    assert not any(t["kept"] for t in traces)  # ...and still verify nothing
    assert {c["kind"] for c in model.artifact_["candidates"]} == {"zero-shot", "labels-only"}
    assert "Reasoning that predicted" not in model.artifact_["persona_notes"]  # no guessed reasoning reaches Θ
    assert model.artifact_["verdict_sources"]["fallback"] == model.artifact_["verdict_fallbacks"]
    # one call at a time, so the one malformed answer is the first trace's, and its fresh sample parses
    lm, _ = scripted_lm(with_scores=False, malformed_verdicts=1)
    once = SynthesizeMe(lm=lm, num_threads=1).fit(make_pairs(10, TRICKS))
    retried = [t for t in once.artifact_["traces"] if t["verdict_source"] == "retried"]
    assert len(retried) == 1 and retried[0]["verdict"] == retried[0]["user_choice"]  # right, re-sampled...
    assert not retried[0]["kept"]  # ...and still not verified


def test_the_official_policy_turns_unclear_verdicts_into_ties_scored_wrong():
    lm, _ = scripted_lm(with_scores=False, malformed_verdicts=4)
    model = SynthesizeMe(lm=lm, num_threads=4, verdict_policy="official").fit(make_pairs(10, TRICKS))
    ties = [t for t in model.artifact_["traces"] if t["verdict_source"] == "tie"]
    assert ties and all(t["verdict"] == "Tie" and not t["kept"] for t in ties)
    assert model.artifact_["verdict_policy"] == model.artifact_["config"]["verdict_policy"] == "official"
    assert model.artifact_["verdict_sources"]["tie"] >= len(ties)


def fit_with(n: int = 10, **kwargs):
    lm, engine = scripted_lm()
    return SynthesizeMe(lm=lm, num_threads=4, **kwargs).fit(make_pairs(n, TRICKS)), engine


def test_official_tie_rule_and_stop_at_score_pick_the_first_good_enough_candidate():
    first, _ = fit_with(tie_break="first")
    stopped, _ = fit_with(stop_at_score=0.5)
    for model in (first, stopped):
        for stage in ("bootstrap", "demos"):
            ranked = sorted((c for c in model.artifact_["candidates"] if c["stage"] == stage),
                            key=lambda c: c["candidate_id"])
            if model is first:
                best = max(c["accuracy"] for c in ranked)
                expected = next(c for c in ranked if c["accuracy"] == best)
            else:
                expected = next(c for c in ranked if c["accuracy"] >= 0.5)
            assert model.artifact_["chosen"][stage] == expected["candidate_id"]


# ---- the official library's API -----------------------------------------------------------------------------------
def official_rows(n: int, **extra):
    rows = []
    for i, pair in enumerate(make_pairs(n, TRICKS)):
        row = pair.to_dict()
        row["context"] = [{"role": "human", "content": row["context"][0]["content"]}]
        row["chosen"]["role"], row["rejected"]["role"] = "bot", "bot"
        rows.append({**row, "user_id": 42, "flip": i % 2 == 0, **extra})
    return rows


def test_fit_takes_official_dict_rows_with_their_roles_ids_flip_and_split():
    lm, _ = scripted_lm()
    model = SynthesizeMe(lm=lm, num_threads=4).fit(official_rows(7))
    assert model.user_id_ == "42" and model.artifact_["user_id"] == "42"
    assert [len(model.artifact_["pairs"][part]) for part in ("train", "validation")] == [4, 3]  # ⌊0.7 × 7⌋ = 4
    assert model.artifact_["pairs"]["train"][0]["context"][0]["role"] == "user"
    for stored in model.artifact_["traces"]:  # flip decides which side the judge sees the chosen reply on
        assert stored["chosen_shown_first"] == (stored["pair_index"] % 2 == 0)
    assert model.get_persona() == PERSONA
    with_val = SynthesizeMe(lm=lm, num_threads=4, user_id="me").fit(official_rows(5), val_data=official_rows(3))
    assert with_val.user_id_ == "me" and len(with_val.artifact_["pairs"]["validation"]) == 3
    from synth.data import PairFileError

    broken = official_rows(3)
    broken[1]["chosen"]["content"] = "  "
    with pytest.raises(PairFileError, match=r"fit\(data\), line 2, field 'chosen.content': empty content"):
        SynthesizeMe(lm=lm).fit(broken)
    same = official_rows(3)
    same[2]["rejected"] = dict(same[2]["chosen"])
    with pytest.raises(PairFileError, match="line 3, field 'rejected': chosen and rejected completions are identical"):
        SynthesizeMe(lm=lm).fit(same)


def test_evaluate_returns_mean_bounds_and_per_item_results_like_the_official_library():
    model, _, _ = fit()
    test_rows = [p.to_dict() for p in make_pairs(14, tricks={12})[10:]]
    result = model.evaluate(test_rows)
    assert result["mean"] == result.mean == result.accuracy == 1.0
    assert result["lower_bound"] <= result["mean"] <= result["upper_bound"]
    assert result["results"] == [1] * 8 and result.per_pair_scores == (1.0,) * 4
    with pytest.raises(KeyError):
        result["median"]


DEMOS = [{"conversation": "User: plan my day?", "first_reply": "Gym, then work.", "second_reply": "A long plan.",
          "reasoning": "Short wins.", "preferred": "First"},
         {"conversation": "User: a poem?", "first_reply": "A sonnet.", "second_reply": "Two lines.",
          "preferred": "Second"}]


def fitted_with_demos():
    model, _, _ = fit()
    return SynthesizeMe.from_artifact({**model.artifact_, "demos": DEMOS}, lm=model.lm)


def test_demos_can_be_read_with_the_official_keys():
    model = fitted_with_demos()
    ours, official = model.get_demos(), model.get_demos(keys="official")
    assert len(ours) == len(official) == 2 and "reasoning" not in official[1]
    for mine, theirs in zip(ours, official, strict=True):
        assert set(theirs) <= {"conversation", "first_completion", "second_completion", "reasoning", "preference"}
        assert (theirs["first_completion"], theirs["preference"]) == (mine["first_reply"], mine["preferred"])
