"""synth.cli: every command's arguments, the shared-flag convention, bad input, and runs end to end through an
OpenAI-compatible server on loopback (tests/openai_server.py) answering like the scripted engine."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import dspy
import pytest

from synth.cli import build_parser, main
from synth.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from synth.data import save_pairs
from synth.evaluation.datasets import synthetic_dataset, write_parquet_pairs
from synth.evaluation.runner import LEDGER_NAME, Ledger
from tests.openai_server import ScriptedOpenAIServer
from tests.scripted import PERSONA, ScriptedEngine, make_pairs, make_population

LM_COMMANDS = ("fit", "judge", "generate", "optimize-theta", "eval", "eval-scaling", "insights", "app")
MODEL_FLAGS = ("--model", "--api-base", "--api-key", "--device", "--quantize")
CACHE_FLAGS = ("--cache-dir", "--no-cache")


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    """Every cache a command opens lives under this test's folder; DSPy's process-wide cache is put back after."""
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dspy, "cache", dspy.cache)


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(commands.choices)


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {flag: action for action in parser._actions for flag in action.option_strings}


# ---- arguments --------------------------------------------------------------------------------------------------
def test_every_command_is_registered_once():
    assert sorted(subparsers()) == sorted(["fit", "judge", "persona", "generate", "optimize-theta", "eval", "prepare",
                                           "eval-scaling", "insights", "app"])


@pytest.mark.parametrize("argv, expected", [
    (["fit", "p.jsonl", "-o", "a.json"],
     {"pairs": "p.jsonl", "output": "a.json", "quick": False, "num_candidates": None, "max_demos": None, "seed": 0,
      "threads": None, "model": None, "device": "auto", "cache_dir": None, "no_cache": False, "val": None,
      "user_id": None, "verdict_policy": None, "tie_break": "confidence", "stop_at_score": None, "theta": None}),
    (["fit", "p.jsonl", "--output", "a.json", "--quick", "--num-candidates", "0", "--max-demos", "2", "--seed", "3",
      "--threads", "4", "--model", "openai/x", "--api-base", "http://h/v1", "--api-key", "k", "--theta", "t.json",
      "--val", "v.jsonl", "--quiet", "--no-cache", "--user-id", "u7", "--verdict-policy", "official",
      "--tie-break", "first", "--stop-at-score", "0.8"],
     {"quick": True, "num_candidates": 0, "max_demos": 2, "seed": 3, "threads": 4, "model": "openai/x",
      "api_base": "http://h/v1", "api_key": "k", "theta": "t.json", "val": "v.jsonl", "quiet": True,
      "no_cache": True, "user_id": "u7", "verdict_policy": "official", "tie_break": "first", "stop_at_score": 0.8}),
    (["judge", "a.json", "--pair", "pair.json", "--compare-default", "--model", "offline"],
     {"artifact": "a.json", "pair": "pair.json", "compare_default": True, "model": "offline"}),
    (["persona", "a.json", "--format", "generation-prompt"], {"artifact": "a.json", "format": "generation-prompt"}),
    (["optimize-theta", "many.jsonl", "-o", "theta.json", "--teacher-model", "openai/big", "--auto", "medium",
      "--max-users", "12", "--quick", "--threads", "3"],
     {"pairs": "many.jsonl", "output": "theta.json", "teacher_model": "openai/big", "auto": "medium",
      "max_users": 12, "quick": True, "threads": 3, "seed": 0, "theta_demos": 2, "theta": None}),
    (["eval", "--dataset", "d.jsonl", "-o", "out", "--quick", "--methods", "all"],
     {"dataset": "d.jsonl", "output": "out", "quick": True, "methods": "all", "threads": 8, "parallel_users": 4,
      "backend": "threads", "split": "0.5,0.2,0.3", "users": None, "theta": None, "verdict_policy": None}),
    (["eval", "--dataset", "d.jsonl", "-o", "out", "--theta", "big.json", "--verdict-policy", "parse"],
     {"theta": "big.json", "verdict_policy": "parse"}),
    (["eval", "--dataset", "d.jsonl", "-o", "out", "--threads", "2", "--parallel-users", "6", "--backend", "ray",
      "--users", "5", "--model-label", "mine"],
     {"threads": 2, "parallel_users": 6, "backend": "ray", "users": 5, "model_label": "mine"}),
    (["eval-scaling", "--dataset", "d.jsonl", "-o", "out"],
     {"methods": "synthesizeme", "sizes": "1,2,3,5,8,12", "threads": 8, "parallel_users": 4}),
    (["insights", "a.jsonl", "b.json", "-o", "i.json", "--html", "r.html", "--min-users", "3", "--seed", "2",
      "--resamples", "0", "--model", "offline", "--llm-facets", "--no-cache"],
     {"personas": ["a.jsonl", "b.json"], "output": "i.json", "html": "r.html", "min_users": 3, "seed": 2,
      "resamples": 0, "model": "offline", "llm_facets": True, "no_cache": True}),
    (["insights", "a.jsonl", "-o", "i.json"], {"model": None, "llm_facets": False, "min_users": 5, "resamples": 5}),
    (["app", "--host", "0.0.0.0", "--port", "9000", "--share"],
     {"host": "0.0.0.0", "port": 9000, "share": True, "quantize": "auto"}),  # a visitor's wait matters most
    (["app", "--quantize", "none"], {"quantize": "none"}),
    (["fit", "p.jsonl", "-o", "a.json"], {"quantize": "none"}),  # a seeded fit repeats exactly
    (["fit", "p.jsonl", "-o", "a.json", "--quantize", "int8"], {"quantize": "int8"}),
    (["prepare", "--model", "offline", "--cache-dir", "c", "--device", "cpu", "--quiet"],
     {"model": "offline", "cache_dir": "c", "device": "cpu", "quiet": True}),
])
def test_each_command_parses_its_arguments(argv, expected):
    args = build_parser().parse_args(argv)
    assert args.command == argv[0] and callable(args.func)
    assert {name: getattr(args, name) for name in expected} == expected


@pytest.mark.parametrize("argv", [
    ["fit", "p.jsonl"],  # no -o
    ["fit", "p.jsonl", "-o", "a.json", "--threads", "0"],
    ["fit", "p.jsonl", "-o", "a.json", "--max-demos", "0"],
    ["eval", "--dataset", "d.jsonl", "-o", "out", "--parallel-users", "zero"],
    ["eval", "--dataset", "d.jsonl", "-o", "out", "--lm-threads", "4"],
    ["insights", "a.jsonl", "--json", "i.json"],
    ["insights", "a.jsonl", "-o", "i.json", "--min-users", "0"],
    ["insights", "a.jsonl", "-o", "i.json", "--lm", "openai/x"],
    ["persona", "a.json", "--model", "offline"],  # persona needs no model
    ["fit", "p.jsonl", "-o", "a.json", "--stop-at-score", "80"],  # a fraction, not the official percent
    ["fit", "p.jsonl", "-o", "a.json", "--verdict-policy", "vote"],
    ["fit", "p.jsonl", "-o", "a.json", "--tie-break", "random"],
    ["prepare", "--api-base", "http://h/v1"],  # only local models are prepared: no server to name
    ["prepare", "--no-cache"],  # prepare caches no LM answers
    ["prepare", "--quantize", "int8"],  # prepare converts weights; it runs no model to quantize
    ["fit", "p.jsonl", "-o", "a.json", "--quantize", "int4"],
])
def test_bad_arguments_are_refused_by_the_parser(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2 and "error:" in capsys.readouterr().err


def test_shared_flags_mean_one_thing_in_every_command():
    commands = subparsers()
    for name in LM_COMMANDS:  # every command that calls an LM takes the same model and cache options
        assert set(MODEL_FLAGS + CACHE_FLAGS) <= set(options(commands[name])), name
    for name in ("persona",):
        assert not set(MODEL_FLAGS + CACHE_FLAGS) & set(options(commands[name])), name
    shared = ("-o", "--output", "--seed", "--quick", "--quiet", "--threads", *MODEL_FLAGS, *CACHE_FLAGS)
    for flag in shared:
        actions = [options(parser)[flag] for parser in commands.values() if flag in options(parser)]
        assert len(actions) >= 2, flag
        assert len({(a.dest, a.nargs, a.const, a.required if flag in ("-o", "--output") else None) for a in actions}
                   ) == 1, flag
        meanings = {(a.help or "").split(" (default")[0].split(": ")[0] for a in actions}
        if flag not in ("-o", "--output", "--seed"):  # what is written and what is seeded differ by command
            assert len(meanings) == 1, (flag, meanings)
    threads = {name: options(parser)["--threads"].help for name, parser in commands.items()
               if "--threads" in options(parser)}
    assert set(threads) == {"fit", "optimize-theta", "eval", "eval-scaling"}
    assert all(text.startswith("LM calls in flight at once") for text in threads.values())
    assert {name for name, parser in commands.items() if "--parallel-users" in options(parser)} == {
        "eval", "eval-scaling"}


@pytest.mark.parametrize("native_bf16", [False, True])
def test_quantize_reaches_the_local_engine_the_command_builds(tmp_path, monkeypatch, native_bf16):
    from synth.cli.common import lm_options
    from synth.lm import build_lm, loading

    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: native_bf16)
    folder = tmp_path / "model"
    folder.mkdir()
    engines = []
    for argv, expected in ((["app"], "auto"), (["fit", "p.jsonl", "-o", "a.json"], "none")):
        options = lm_options(build_parser().parse_args([*argv, "--model", str(folder), "--device", "cpu"]))
        assert options["quantize"] == expected
        engines.append(build_lm(**options).engine)  # nothing loads until the first call
        assert not engines[-1].local_model.is_loaded
    assert engines[0].local_model.quantize_request == "auto"
    # One engine (one copy of the weights) per quantization as it resolves: the app's auto is int8 on a CPU without
    # native bf16, and none, the same load as fit's, on one with it.
    assert (engines[0] is engines[1]) is native_bf16
    for engine in engines:
        engine.close()


def test_cache_dir_is_the_root_of_every_cache(tmp_path, monkeypatch):
    from synth.cli.common import use_cache_dir
    from synth.paths import cache_dir

    use_cache_dir(build_parser().parse_args(["fit", "p.jsonl", "-o", "a.json", "--cache-dir", str(tmp_path / "c")]))
    assert os.environ["SYNTH_CACHE_DIR"] == str(tmp_path / "c")
    assert cache_dir("dspy") == tmp_path / "c" / "dspy" and cache_dir("embeddings") == tmp_path / "c" / "embeddings"
    assert main(["prepare", "--model", "openai/x", "--cache-dir", str(tmp_path / "p"), "--quiet"]) == 0
    assert os.environ["SYNTH_CACHE_DIR"] == str(tmp_path / "p")  # prepare converts into the same cache root


def test_the_cli_reference_documents_every_flag_of_every_command():
    reference = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = dict(section.split("\n", 1) for section in reference.split("\n## synth ")[1:])
    for name, parser in subparsers().items():
        documented = sections[name] + (sections["eval"] if name == "eval-scaling" else "")  # it takes eval's too
        for flag in options(parser):
            if flag.startswith("--") and flag != "--help":
                assert f"`{flag}" in documented, (name, flag)


# ---- bad input --------------------------------------------------------------------------------------------------
def test_fit_exits_non_zero_and_writes_nothing_on_bad_input(tmp_path, capsys):
    good = make_pairs(1)[0].to_dict()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "chosen": {"role": "assistant", "content": ""}})
                   + "\n")
    output = tmp_path / "artifact.json"
    assert main(["fit", str(bad), "-o", str(output)]) == EXIT_BAD_INPUT
    assert not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    assert "bad.jsonl, line 2, field 'chosen.content': empty content" in capsys.readouterr().err


def test_fit_refuses_deeply_nested_json_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "deep.jsonl"
    bad.write_text(json.dumps(make_pairs(1)[0].to_dict()) + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["fit", str(bad), "-o", str(tmp_path / "a.json")]) == EXIT_BAD_INPUT
    assert "deep.jsonl, line 2: JSON nested too deeply to read" in capsys.readouterr().err
    assert not (tmp_path / "a.json").exists()


def test_eval_reports_bad_input_and_unknown_methods(tmp_path, capsys):
    assert main(["eval", "--dataset", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o")]) == EXIT_BAD_INPUT
    assert "file not found" in capsys.readouterr().err
    save_pairs(make_population(1, 4), tmp_path / "d.jsonl")
    assert main(["eval", "--dataset", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "o"),
                 "--methods", "oracle"]) == EXIT_FAILED
    assert "unknown method" in capsys.readouterr().err
    (tmp_path / "theta.json").write_text('{"write.predict": {"signature": "x"}}')
    for argv in (["eval", "--dataset", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "o")],
                 ["fit", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "a.json")]):
        assert main([*argv, "--theta", str(tmp_path / "theta.json")]) == EXIT_BAD_INPUT
        assert "theta.json, field 'write.predict.signature': missing or not an object" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "a.json").exists()


def test_insights_splits_facets_only_with_a_model(tmp_path, capsys):
    personas, out = tmp_path / "personas.jsonl", tmp_path / "insights.json"
    personas.write_text('{"user_id": "a", "persona": "Likes tea."}\n')
    assert main(["insights", str(personas), "-o", str(out), "--llm-facets"]) == EXIT_FAILED
    assert "--llm-facets needs --model" in capsys.readouterr().err and not out.exists()


def test_app_starts_the_studio_from_the_components_package(monkeypatch):
    import components.studio

    started = []
    monkeypatch.setattr(components.studio, "main", lambda **kwargs: started.append(kwargs))
    assert main(["app", "--host", "0.0.0.0", "--port", "9001", "--share", "--model", "openai/x",
                 "--api-base", "http://127.0.0.1:9/v1"]) == EXIT_OK
    (call,) = started
    assert {k: call[k] for k in ("server_name", "server_port", "share")} == {
        "server_name": "0.0.0.0", "server_port": 9001, "share": True}
    assert call["lm_factory"]().model == "openai/x"  # --model reaches the studio's model handle


# ---- end to end through an OpenAI-compatible server --------------------------------------------------------------
@pytest.fixture
def server():
    with ScriptedOpenAIServer(ScriptedEngine(with_scores=False)) as running:
        yield running


def remote(server, *extra: str) -> list[str]:
    return ["--model", "openai/scripted-judge", "--api-base", server.base_url, "--api-key", "local-test", *extra]


def test_fit_judge_and_persona_end_to_end(server, tmp_path, capsys):
    pairs, artifact = tmp_path / "pairs.jsonl", tmp_path / "artifact.json"
    save_pairs(make_pairs(8, tricks={1}), pairs)
    assert main(["fit", str(pairs), "-o", str(artifact), "--quick", "--quiet", "--threads", "4",
                 *remote(server, "--no-cache")]) == EXIT_OK
    saved = json.loads(artifact.read_text())
    assert saved["persona"] == PERSONA and saved["model"] == "openai/scripted-judge" and server.requests > 0
    assert saved["config"]["quick"] and saved["config"]["num_candidates"] == 3 and saved["config"]["num_threads"] == 4
    printed = capsys.readouterr().out
    assert "Persona:" in printed and PERSONA in printed and f"Saved {artifact}" in printed

    pair = tmp_path / "pair.json"
    pair.write_text(json.dumps({"context": "Plan my day?", "a": "Gym, then work.",
                                "b": "A much longer plan with many digressions that go on and on and on."}))
    assert main(["judge", str(artifact), "--pair", str(pair), "--compare-default", *remote(server)]) == EXIT_OK
    assert (tmp_path / "cache" / "dspy").is_dir()  # cached answers under the cache root
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Personalized judge: A preferred (P(A) = 1.00)")
    assert lines[1].startswith("Default judge:      A preferred")

    assert main(["persona", str(artifact), "--format", "judge-prompt"]) == EXIT_OK
    messages = json.loads(capsys.readouterr().out)
    assert messages[0]["role"] == "system" and PERSONA in messages[0]["content"]
    assert main(["persona", str(artifact)]) == EXIT_OK and capsys.readouterr().out.strip() == PERSONA


def test_fit_into_a_folder_writes_the_official_layout(server, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    save_pairs(make_pairs(6, tricks={1}), pairs)
    folder = f"{tmp_path}/official/"
    assert main(["fit", str(pairs), "-o", folder, "--quick", "--quiet", "--threads", "2", "--user-id", "u7",
                 "--verdict-policy", "official", *remote(server, "--no-cache")]) == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "official").iterdir()) == ["u7.json", "u7_persona.txt"]
    assert "Verdicts (official)" in capsys.readouterr().out
    assert main(["persona", folder]) == EXIT_OK and capsys.readouterr().out.strip() == PERSONA


def test_eval_with_theta_adds_the_distilled_rows(server, tmp_path, capsys):
    from synth.theta import PersonaWriter, save_theta

    writer = PersonaWriter()
    writer.predictor.signature = writer.predictor.signature.with_instructions("Made with a larger model.")
    save_theta(writer, tmp_path / "big_theta.json")
    data, out = tmp_path / "users.jsonl", tmp_path / "results"
    save_pairs(make_population(2, 10), data)
    assert main(["eval", "--dataset", str(data), "-o", str(out), "--methods", "personas,synthesizeme", "--quick",
                 "--theta", str(tmp_path / "big_theta.json"), "--threads", "2", "--quiet",
                 *remote(server, "--no-cache")]) == EXIT_OK
    methods = {r["method"] for r in Ledger(out / LEDGER_NAME).records()}
    assert methods == {"personas", "synthesizeme", "personas-distilled", "synthesizeme-distilled"}
    table = capsys.readouterr().out
    assert "| personas + distilled Θ |" in table and "| personas + demos + distilled Θ |" in table
    assert main(["eval", "--dataset", str(data), "-o", str(tmp_path / "r2"), "--methods",
                 "synthesizeme-distilled", *remote(server)]) == EXIT_FAILED
    assert "--theta" in capsys.readouterr().err


def test_eval_end_to_end_resumes_from_its_ledger(server, tmp_path, capsys):
    data, out = tmp_path / "users.jsonl", tmp_path / "results"
    save_pairs(make_population(2, 10), data)
    argv = ["eval", "--dataset", str(data), "-o", str(out), "--methods", "default,memory", "--threads", "2",
            "--parallel-users", "2", "--quiet", *remote(server, "--no-cache")]
    assert main(argv) == EXIT_OK
    records = Ledger(out / LEDGER_NAME).records()
    assert {(r["user_id"], r["method"]) for r in records} == {(u, m) for u in ("user-0", "user-1")
                                                              for m in ("default", "memory")}
    assert "| memory |" in capsys.readouterr().out
    requests = server.requests
    assert main(argv) == EXIT_OK and server.requests == requests  # everything is in the ledger
    assert "0 results computed this run, 4 in the ledger" in capsys.readouterr().out


# ---- the real packaged model --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_eval_on_the_packaged_model(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SYNTH_CACHE_DIR")  # the converted model weights are reused from the usual cache
    dataset, _ = synthetic_dataset(3, 5, seed=0)
    write_parquet_pairs([p for u in dataset.users for p in u.pairs], tmp_path / "three_users.parquet")
    out = tmp_path / "results"
    argv = ["eval", "--dataset", str(tmp_path / "three_users.parquet"), "--model", "offline", "--methods",
            "default,synthesizeme", "--quick", "-o", str(out), "--parallel-users", "3", "--threads", "4",
            "--no-cache"]
    assert main(argv) == EXIT_OK
    printed = capsys.readouterr().out
    records = Ledger(out / LEDGER_NAME).records()
    assert len(records) == 6 and {r["method"] for r in records} == {"default", "synthesizeme"}
    for record in records:
        assert record["n_test"] == 2 and len(record["scores"]) == 2
        assert all(score in (0.0, 0.5, 1.0) for score in record["scores"])
        assert (out / record["artifact"]).exists()
    assert len(list(out.rglob("fit-all.synthesizeme.json"))) == 3
    assert "| personas + demos |" in printed and "| default judge |" in printed
    assert main(argv) == EXIT_OK  # rerun: everything is in the ledger
    assert "0 results computed this run, 6 in the ledger" in capsys.readouterr().out


@pytest.mark.parametrize("content, field", [
    ('{"context": "Hi", "a": ["x"], "b": "y"}', "field 'a'"),
    ('{"context": [{"role": "user", "content": 3}], "a": "x", "b": "y"}', "field 'context[0].content'"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_judge_refuses_a_wrongly_typed_or_nested_pair_file(tmp_path, capsys, content, field):
    pair = tmp_path / "pair.json"
    pair.write_text(content)
    assert main(["judge", str(tmp_path / "a.json"), "--pair", str(pair)]) == EXIT_BAD_INPUT
    assert field in capsys.readouterr().err
