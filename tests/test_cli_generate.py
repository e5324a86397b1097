"""``synth generate`` (a prompt answered with and without an artifact's persona) and ``synth persona --format
statements`` (the statements a visitor rates)."""

from __future__ import annotations

import json

import dspy
import pytest

import synth.generate as generate
from synth.cli import build_parser, main
from synth.cli.common import EXIT_FAILED, EXIT_OK
from synth.generate import MAX_ANSWER_TOKENS
from synth.insights.splitting import persona_statements
from tests.openai_server import ScriptedOpenAIServer
from tests.scripted import ScriptedEngine

PERSONA = ("The user prefers short replies, and they dislike small talk. She runs a bakery; she wants numbers "
           "rather than adjectives.")


@pytest.fixture(autouse=True)
def private_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dspy, "cache", dspy.cache)


@pytest.fixture
def artifact(tmp_path):
    path = tmp_path / "artifact.json"
    path.write_text(json.dumps({"persona": PERSONA, "demos": [], "config": {}}))
    return path


@pytest.fixture
def server():
    with ScriptedOpenAIServer(ScriptedEngine(with_scores=False)) as running:
        yield running


def remote(server) -> list[str]:
    return ["--model", "openai/scripted-model", "--api-base", server.base_url, "--api-key", "local-test",
            "--no-cache"]


def test_generate_parses_its_arguments():
    args = build_parser().parse_args(["generate", "a.json", "--prompt", "Hi?", "--max-tokens", "64", "--model", "x"])
    assert (args.artifact, args.prompt, args.max_tokens, args.model, args.func.__name__) == (
        "a.json", "Hi?", 64, "x", "cmd_generate")
    assert build_parser().parse_args(["generate", "a.json", "--prompt", "Hi?"]).max_tokens == 256
    for bad in (["generate", "a.json"], ["generate", "a.json", "--prompt", "Hi?", "--max-tokens", "0"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def test_generate_prints_both_answers_labelled(server, artifact, capsys):
    assert main(["generate", str(artifact), "--prompt", "How long should I proof dough?", *remote(server)]) == EXIT_OK
    printed = capsys.readouterr().out
    without, with_persona = printed.split("\nWith the persona (its generation prompt as the system prompt):\n")
    assert without.startswith("Without the persona (no system prompt):\n")
    assert "How long should I proof dough?" in without and PERSONA not in without  # the scripted model echoes
    assert PERSONA in with_persona and server.requests == 2


def test_generate_passes_the_length_limit_clamped(artifact, monkeypatch, capsys):
    seen = []

    def stream(lm, messages, max_tokens, cancel=None, temperature=0.0, stop=()):
        seen.append(max_tokens)
        yield "Forty minutes." if messages[0]["role"] == "system" else "About an hour, depending on the room."

    monkeypatch.setattr(generate, "stream_chat", stream)
    assert main(["generate", str(artifact), "--prompt", "Proofing?", "--max-tokens", "5000",
                 "--model", "openai/never-called"]) == EXIT_OK
    assert seen == [MAX_ANSWER_TOKENS] * 2 and "Forty minutes." in capsys.readouterr().out


def test_generate_refuses_a_bad_artifact_or_prompt(server, tmp_path, artifact, capsys):
    (tmp_path / "broken.json").write_text("{")
    assert main(["generate", str(tmp_path / "broken.json"), "--prompt", "Hi?", *remote(server)]) != EXIT_OK
    assert "broken.json" in capsys.readouterr().err
    assert main(["generate", str(artifact), "--prompt", "   ", *remote(server)]) == EXIT_FAILED
    assert "write a prompt first" in capsys.readouterr().err and server.requests == 0


def test_persona_prints_the_statements_to_rate(artifact, tmp_path, capsys):
    assert main(["persona", str(artifact), "--format", "statements"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines == persona_statements(PERSONA) and len(lines) == 4
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"persona": "", "demos": [], "config": {}}))
    assert main(["persona", str(empty), "--format", "statements"]) == EXIT_OK
    captured = capsys.readouterr()
    assert captured.out == "" and "the persona is empty" in captured.err
