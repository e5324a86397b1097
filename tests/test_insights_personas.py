"""synth.insights.personas: persona JSONL files and saved artifacts, read through synth.data's checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synth.data import DataFileError
from synth.insights.personas import PersonaFileError, read_artifact, read_personas_jsonl, write_personas_jsonl
from synth.insights.types import Persona


def test_read_personas_jsonl_errors_name_file_line_and_field(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"user_id": "a", "persona": "Likes tea."}\n\n{"user_id": 7, "persona": "Likes chess."}\n')
    assert [p.user_id for p in read_personas_jsonl(good)] == ["a", "7"]
    cases = {
        '{"user_id": "a"}\n': (1, "persona", "missing required field"),
        '{"user_id": "a", "persona": "x"}\n{"user_id": "b", "persona": ""}\n': (2, "persona", "empty"),
        '{"user_id": "a", "persona": "x"}\nnot json\n': (2, None, "not valid JSON"),
        '{"user_id": ["a"], "persona": "x"}\n': (1, "user_id", "must be a string, got list"),
        '{"user_id": "a", "persona": "x"}\n{"user_id": "a", "persona": "y"}\n':
            (2, "user_id", "repeats 'a' from line 1"),
        '{"user_id": "a", "persona": "x", "statements": "x"}\n': (1, "statements", "must be a list of strings"),
        '["a", "x"]\n': (1, None, "expected a JSON object"),
        "": (None, None, "file is empty"),
    }
    bad = tmp_path / "bad.jsonl"
    for content, (line, field, problem) in cases.items():
        bad.write_text(content)
        with pytest.raises(PersonaFileError) as caught:
            read_personas_jsonl(bad)
        error = caught.value
        assert (error.path, error.line, error.field_name) == (str(bad), line, field), content
        assert error.problem.startswith(problem) and str(error).startswith(str(bad))
    bad.write_bytes(b"\x00\x01binary")
    with pytest.raises(PersonaFileError, match="binary file"):
        read_personas_jsonl(bad)
    bad.write_bytes(b'{"user_id": "a", "persona": "caf\xe9"}\n')
    with pytest.raises(PersonaFileError, match="line 1: not valid UTF-8"):
        read_personas_jsonl(bad)
    with pytest.raises(PersonaFileError, match="file not found"):
        read_personas_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(PersonaFileError, match="cannot read file"):
        read_personas_jsonl(tmp_path)


def test_persona_errors_are_data_file_errors_with_pair_errors_wording(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"user_id": "a"}\n')
    with pytest.raises(DataFileError) as caught:
        read_personas_jsonl(bad)
    assert str(caught.value) == f"{bad}, line 1, field 'persona': missing required field"


def test_statements_are_kept_and_written_files_read_back(tmp_path: Path) -> None:
    source = tmp_path / "with_statements.jsonl"
    source.write_text('{"user_id": "a", "persona": "Likes tea.", "statements": [" Likes tea. ", " "]}\n')
    assert read_personas_jsonl(source) == [Persona("a", "Likes tea.", ("Likes tea.",))]
    personas = [Persona("u-1", "Aime le thé."), Persona("u-2", "Plays chess.\nDaily.")]
    target = tmp_path / "out" / "personas.jsonl"
    write_personas_jsonl(personas, target)
    assert read_personas_jsonl(target) == personas
    assert "thé" in target.read_text(encoding="utf-8")


def test_read_artifact_takes_user_id_from_key_or_file_name(tmp_path: Path) -> None:
    named = tmp_path / "user-42.json"
    named.write_text(json.dumps({"persona": "Likes tea.", "demos": []}))
    persona, artifact = read_artifact(named)
    assert persona == Persona("user-42", "Likes tea.") and artifact["demos"] == []
    keyed = tmp_path / "artifact.json"
    keyed.write_text(json.dumps({"persona": "Likes chess.", "user_id": "u-1"}))
    assert read_artifact(keyed)[0].user_id == "u-1"
    keyed.write_text(json.dumps({"demos": []}))
    with pytest.raises(PersonaFileError, match=r"artifact\.json, field 'persona': missing required field"):
        read_artifact(keyed)
    keyed.write_text('{"persona":\n nope}')
    with pytest.raises(PersonaFileError, match=r"artifact\.json, line 2: not valid JSON"):
        read_artifact(keyed)
    keyed.write_text("[1]")
    with pytest.raises(PersonaFileError, match="expected a JSON object"):
        read_artifact(keyed)
