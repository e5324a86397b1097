"""End to end on the real packaged model (Gemma 3 270M base, CPU): slow, few, focused."""

from __future__ import annotations

import json

import pytest

from synth.cli import main
from synth.data import load_pairs, save_pairs

pytestmark = pytest.mark.slow


def test_quick_fit_on_the_packaged_model_writes_a_complete_artifact(tmp_path, capsys):
    pairs_path = tmp_path / "pairs.jsonl"
    save_pairs(load_pairs("assets/example_pairs.jsonl")[:5], pairs_path)
    artifact_path = tmp_path / "artifact.json"
    assert main(["fit", str(pairs_path), "-o", str(artifact_path), "--quick", "--model", "offline", "--no-cache",
                 "--quiet"]) == 0
    artifact = json.loads(artifact_path.read_text())
    for key in ("persona", "demos", "traces", "candidates", "theta_id", "model", "config", "timings", "lm_usage",
                "validation_accuracy", "default_validation_accuracy", "pairs", "verdict_fallbacks"):
        assert key in artifact, key
    assert artifact["config"]["quick"] is True and "gemma" in artifact["model"].lower()
    assert {t["stage"] for t in artifact["traces"]} == {"bootstrap", "demos"}
    assert len(artifact["traces"]) == 2 * len(artifact["pairs"]["train"])
    for trace in artifact["traces"]:  # every verdict is First or Second, read from real next-token probabilities
        assert trace["verdict"] in ("First", "Second") and trace["verdict_source"] == "probabilities"
        assert 0.0 <= trace["p_first"] <= 1.0
        assert trace["kept"] == (trace["verdict"] == trace["user_choice"])
    assert artifact["verdict_fallbacks"] == 0
    assert all(0.0 <= c["accuracy"] <= 1.0 for c in artifact["candidates"])
    assert artifact["lm_usage"]["lm_calls"] > 0 and artifact["lm_usage"]["prompt_tokens"] > 0
    assert isinstance(artifact["persona"], str)
    summary = capsys.readouterr().out
    assert "Persona:" in summary and "Validation accuracy" in summary

    assert main(["persona", str(artifact_path), "--format", "judge-prompt"]) == 0
    messages = json.loads(capsys.readouterr().out)
    assert messages[0]["role"] == "system"


def test_a_quick_fit_runs_with_int8_linear_layers_on_the_packaged_model():
    """What ``quantize="auto"`` gives a CPU without native bf16 (here asked for by name, whatever this CPU has)."""
    import torch

    from synth.lm import packaged_model_path
    from synth.lm.engine import LocalEngine
    from synth.lm.loading import LocalModel
    from synth.pipeline import SynthesizeMe

    model = LocalModel(packaged_model_path(), device="cpu", dtype="float32", quantize="int8").load()
    assert model.precision == "float32, int8 linear layers"
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in model.model.modules())
    engine = LocalEngine(model)
    try:
        fitted = SynthesizeMe(lm=engine.as_lm(cache=False), quick=True, seed=0).fit(
            load_pairs("assets/example_pairs.jsonl")[:5])
    finally:
        engine.close()
    artifact = fitted.artifact_
    assert {t["stage"] for t in artifact["traces"]} == {"bootstrap", "demos"}
    for trace in artifact["traces"]:  # verdicts still read from the int8 model's next-token probabilities
        assert trace["verdict"] in ("First", "Second") and trace["verdict_source"] == "probabilities"
    assert isinstance(fitted.get_persona(), str) and 0.0 <= artifact["validation_accuracy"] <= 1.0
