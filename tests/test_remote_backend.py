"""The remote backend over real HTTP: an OpenAI-compatible server on loopback, reached through dspy.LM."""

from __future__ import annotations

from synth.lm import build_lm
from synth.pipeline import SynthesizeMe
from tests.openai_server import ScriptedOpenAIServer
from tests.scripted import PERSONA, ScriptedEngine, make_pairs


def test_fit_through_an_openai_compatible_server_parses_and_retries_verdicts():
    engine = ScriptedEngine(with_scores=False, malformed_verdicts=2)
    with ScriptedOpenAIServer(engine) as server:
        lm = build_lm("openai/scripted-judge", api_base=server.base_url, api_key="local-test", cache=False)
        model = SynthesizeMe(lm=lm, num_candidates=3, num_threads=4).fit(make_pairs(8, tricks={1}))
        assert server.requests > 0 and engine.malformed_verdicts == 0
        assert model.get_persona() == PERSONA
        sources = {t["verdict_source"] for t in model.artifact_["traces"]}
        assert sources <= {"parsed", "retried"} and model.artifact_["verdict_fallbacks"] == 0
        assert model.artifact_["model"] == "openai/scripted-judge"
        pair = make_pairs(10)[9]
        assert model.predict_pairwise(pair.context, pair.chosen, pair.rejected) == 1


def test_ray_fans_users_out_to_workers_that_reach_the_server(tmp_path):
    """The scale-out path: Ray tasks per user, each building its LM from a spec that points at the server."""
    import dataclasses

    import ray

    from synth.evaluation.datasets import EvalDataset
    from synth.evaluation.protocol import MethodSettings
    from synth.evaluation.runner import RunConfig, run_evaluation

    pairs = [dataclasses.replace(p, user_id=f"user-{u}") for u in range(3) for p in make_pairs(10, tricks={2})]
    config = RunConfig(methods=("default", "synthesizeme"), backend="ray",
                       settings=MethodSettings(num_threads=2, num_candidates=2))
    with ScriptedOpenAIServer(ScriptedEngine(with_scores=False)) as server:
        spec = {"spec": "openai/scripted-judge", "api_base": server.base_url, "api_key": "local-test", "cache": False}
        try:
            outcome = run_evaluation(EvalDataset.from_pairs(pairs, "remote-users"), None, tmp_path, config,
                                     model_label="remote", lm_spec=spec, progress=False)
        finally:
            ray.shutdown()
        assert server.requests > 0  # the calls came from Ray worker processes over HTTP
    by_key = {(r["user_id"], r["method"]): r for r in outcome.records}
    assert set(by_key) == {(f"user-{u}", m) for u in range(3) for m in ("default", "synthesizeme")}
    assert all(by_key[(f"user-{u}", "synthesizeme")]["persona"] == PERSONA for u in range(3))
    assert "| personas + demos | 100.00 ± 0.00 |" in (tmp_path / "table.md").read_text()
