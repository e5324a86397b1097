"""Persona files: JSON lines of `{"user_id", "persona"}` and saved SynthesizeMe artifacts.

Files are read through `synth.data` (its binary, UTF-8 and JSON-line checks), and every problem is a
`PersonaFileError`, a `synth.data.DataFileError` naming the file, line and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from synth.data import DataFileError, atomic_write_text, json_lines, read_text_file
from synth.insights.types import Persona


class PersonaFileError(DataFileError):
    """A personas file or artifact could not be read."""


def _text_field(record: dict[str, Any], field: str, path: Path, line: int | None) -> str:
    """A required, non-empty string field (an integer user id is taken as its string)."""
    if field not in record:
        raise PersonaFileError(path, line, field, "missing required field")
    value = record[field]
    if field == "user_id" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise PersonaFileError(path, line, field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise PersonaFileError(path, line, field, "empty")
    return value.strip()


def _persona(record: Any, path: Path, line: int) -> Persona:
    if not isinstance(record, dict):
        raise PersonaFileError(path, line, None, f"expected a JSON object with 'user_id' and 'persona', "
                                                 f"got {type(record).__name__}")
    user_id = _text_field(record, "user_id", path, line)
    text = _text_field(record, "persona", path, line)
    statements = record.get("statements", [])
    if not isinstance(statements, list) or not all(isinstance(s, str) for s in statements):
        raise PersonaFileError(path, line, "statements", "must be a list of strings")
    return Persona(user_id, text, tuple(s.strip() for s in statements if s.strip()))


def read_personas_jsonl(path: str | Path) -> list[Persona]:
    """One persona per line: {"user_id": ..., "persona": ...}; optional "statements" (list of strings) are kept.

    Raises `PersonaFileError` on the first bad line and on a repeated user id.
    """
    path = Path(path)
    lines = json_lines(
        read_text_file(path, PersonaFileError).splitlines(),
        lambda number, reason: PersonaFileError(path, number, None, reason),
    )
    personas: list[Persona] = []
    first_line_of: dict[str, int] = {}
    for number, record in lines:
        persona = _persona(record, path, number)
        if persona.user_id in first_line_of:
            raise PersonaFileError(path, number, "user_id",
                                   f"repeats {persona.user_id!r} from line {first_line_of[persona.user_id]}")
        first_line_of[persona.user_id] = number
        personas.append(persona)
    if not personas:
        raise PersonaFileError(path, None, None, "no personas found")
    return personas


def read_artifact(path: str | Path) -> tuple[Persona, dict[str, Any]]:
    """A saved SynthesizeMe artifact (JSON with a top-level 'persona'): its persona and the whole artifact.

    The user id is the artifact's 'user_id' when present, otherwise the file name without its extension.
    """
    path = Path(path)
    try:
        document = json.loads(read_text_file(path, PersonaFileError))
    except json.JSONDecodeError as error:
        raise PersonaFileError(path, error.lineno, None, f"not valid JSON ({error.msg})") from None
    if not isinstance(document, dict):
        raise PersonaFileError(path, None, None, "expected a JSON object with a top-level 'persona'")
    text = _text_field(document, "persona", path, None)
    user_id = _text_field({"user_id": path.stem} | document, "user_id", path, None)
    return Persona(user_id, text), document


def write_personas_jsonl(personas: Iterable[Persona], path: str | Path) -> None:
    """Write personas as JSON lines (user_id, persona) atomically."""
    lines = [json.dumps({"user_id": p.user_id, "persona": p.text}, ensure_ascii=False) for p in personas]
    atomic_write_text(Path(path), "\n".join(lines) + "\n")
