"""Reading a fitted judge back: our artifact, or the official library's save, as data that is checked and bounded.

A loaded file is data, never configuration. Every field a judge is rebuilt from is type-checked (a wrong type is an
:class:`ArtifactError` naming the field, never a crash later), and what it may set is bounded by
:class:`ArtifactLimits`: settings above a limit are lowered to it, demos beyond the count are dropped and long demo
texts are cut in the middle; every change is reported in ``LoadedArtifact.clamped``. The defaults are safe for a
server that loads strangers' files; a caller that trusts its files can pass larger limits.

The official library saves one user as a folder holding ``<user_id>_persona.txt`` (the persona) and
``<user_id>.json`` (DSPy's saved state of its judge program, under the key ``judge_persona.predict``, with demos
keyed ``conversation``, ``first_completion``, ``second_completion``, ``reasoning``, ``preference``; labelled-only demos
keep the raw row keys ``completion_one``, ``completion_two``, ``chosen``). :func:`read_official_save` and
:func:`write_official_save` read and write that layout.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.data import DataFileError, atomic_write_text, parse_json, read_text_file, truncate_middle
from synth.judge import VERDICT_POLICIES
from synth.signatures import VERDICTS
from synth.steps import TIE_BREAKS, StepSettings

DEMO_TEXT_FIELDS = ("conversation", "first_reply", "second_reply", "reasoning")
DEMO_REQUIRED = ("conversation", "first_reply", "second_reply", "preferred")
# Our demo keys and the official library's (its judge signature's field names).
OFFICIAL_DEMO_KEYS = {"conversation": "conversation", "first_reply": "first_completion",
                      "second_reply": "second_completion", "reasoning": "reasoning", "preferred": "preference"}
OFFICIAL_LABELED_KEYS = {"first_reply": "completion_one", "second_reply": "completion_two", "preferred": "chosen"}
OFFICIAL_PROGRAM_KEY = "judge_persona.predict"
OFFICIAL_PERSONA_SUFFIX = "_persona.txt"


class ArtifactError(DataFileError):
    """A saved judge could not be loaded; the message names the file and the field."""


@dataclass(frozen=True)
class ArtifactLimits:
    """The most a loaded artifact may set (defaults: safe for files from strangers).

    Settings above their limit are lowered to it; ``demos`` is how many demos are kept, ``demo_chars`` how long each
    demo text may be (longer ones are cut in the middle); a persona over ``persona_chars`` is refused.
    """

    reasoning_tokens: int = 1024
    persona_tokens: int = 1024
    max_turn_chars: int = 8000
    num_candidates: int = 20
    max_demos: int = 32
    max_labeled_demos: int = 16
    num_threads: int = 16
    demos: int = 16
    demo_chars: int = 8000
    persona_chars: int = 8000


DEFAULT_LIMITS = ArtifactLimits()


@dataclass(frozen=True)
class LoadedArtifact:
    """A checked artifact: what a judge is rebuilt from, and what was lowered or dropped on the way."""

    persona: str
    demos: list[dict[str, str]]
    settings: StepSettings
    clamped: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (in the file, used)


def check_artifact(artifact: Any, limits: ArtifactLimits, source: str) -> LoadedArtifact:
    """Type-check and bound an artifact's persona, demos and settings (see the module docstring)."""

    def fail(field_name: str | None, problem: str) -> ArtifactError:
        return ArtifactError(source, None, field_name, problem)

    if not isinstance(artifact, dict):
        raise fail(None, f"expected a JSON object, got {type(artifact).__name__}; not a SynthesizeMe artifact")
    for key in ("persona", "demos", "config"):
        if key not in artifact:
            raise fail(key, "missing; not a SynthesizeMe artifact")
    clamped: dict[str, tuple[Any, Any]] = {}
    persona = artifact["persona"]
    if persona is None:
        persona = ""
    if not isinstance(persona, str):
        raise fail("persona", f"must be a string, got {type(persona).__name__}")
    if len(persona) > limits.persona_chars:
        raise fail("persona", f"{len(persona):,} characters is over the {limits.persona_chars:,} limit")
    demos = artifact["demos"]
    if not isinstance(demos, list):
        raise fail("demos", f"must be a list of objects, got {type(demos).__name__}")
    checked = [_check_demo(demo, f"demos[{i}]", limits, fail, clamped) for i, demo in enumerate(demos[: limits.demos])]
    if len(demos) > limits.demos:
        clamped["demos"] = (len(demos), limits.demos)
    config = artifact["config"]
    if not isinstance(config, dict):
        raise fail("config", f"must be an object, got {type(config).__name__}")
    return LoadedArtifact(persona, checked, _check_settings(config, limits, clamped, fail), clamped)


def _check_demo(demo: Any, name: str, limits: ArtifactLimits, fail, clamped: dict) -> dict[str, str]:
    if not isinstance(demo, dict):
        raise fail(name, f"must be an object, got {type(demo).__name__}")
    for key in DEMO_REQUIRED:
        if key not in demo:
            raise fail(f"{name}.{key}", "missing")
    checked = {}
    for key in DEMO_TEXT_FIELDS:
        value = demo.get(key)
        if value is None and key == "reasoning":
            continue
        if not isinstance(value, str):
            raise fail(f"{name}.{key}", f"must be a string, got {type(value).__name__}")
        checked[key] = truncate_middle(value, limits.demo_chars)
        if len(value) > limits.demo_chars:
            clamped["demo_chars"] = ("longer", limits.demo_chars)
    if demo["preferred"] not in VERDICTS:
        raise fail(f"{name}.preferred", f"must be one of {', '.join(VERDICTS)}, got {demo['preferred']!r}")
    checked["preferred"] = demo["preferred"]
    return checked


def _check_settings(config: dict, limits: ArtifactLimits, clamped: dict, fail) -> StepSettings:
    """StepSettings from an artifact's config: unknown keys ignored, types checked, values bounded."""
    values: dict[str, Any] = {}
    bounded = {f.name for f in dataclasses.fields(ArtifactLimits)} & {f.name for f in dataclasses.fields(StepSettings)}
    for setting in dataclasses.fields(StepSettings):
        name = setting.name
        if name not in config:
            continue
        value = config[name]
        where = f"config.{name}"
        if name == "verdict_policy":
            if value is not None and value not in VERDICT_POLICIES:
                raise fail(where, f"must be one of {', '.join(VERDICT_POLICIES)} or null, got {value!r}")
        elif name == "tie_break":
            if value not in TIE_BREAKS:
                raise fail(where, f"must be one of {', '.join(TIE_BREAKS)}, got {value!r}")
        elif name == "stop_at_score":
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value <= 1):
                raise fail(where, f"must be a fraction in (0, 1] or null, got {value!r}")
        elif value is None and name == "max_demos":
            pass
        elif isinstance(value, bool) or not isinstance(value, int):
            raise fail(where, f"must be a whole number, got {type(value).__name__}")
        elif value < 0:
            raise fail(where, f"must not be negative, got {value}")
        elif name in bounded:
            limit = getattr(limits, name)
            unbounded = name == "max_turn_chars" and value == 0  # 0: turns never cut
            if value > limit or unbounded:
                clamped[name] = (value, limit)
                value = limit
        values[name] = value
    try:
        return StepSettings(**values)
    except ValueError as exc:
        raise fail("config", str(exc)) from None


def read_artifact_file(path: Path) -> Any:
    """An artifact file's JSON, refusing unreadable, binary, non-UTF-8 or too deeply nested files with the path."""
    text = read_text_file(path, ArtifactError)
    return parse_json(text, lambda line, reason: ArtifactError(path, line, None, reason))


# ---- the official library's save --------------------------------------------------------------------------------
def official_demo(demo: Mapping[str, Any]) -> dict[str, Any]:
    """One of our demos with the official library's keys (``augmented`` marks a bootstrapped one, as DSPy does)."""
    renamed = {OFFICIAL_DEMO_KEYS[key]: value for key, value in demo.items() if key in OFFICIAL_DEMO_KEYS}
    return {"augmented": True, **renamed} if demo.get("reasoning") else renamed


def _file_safe_user_id(user_id: str) -> str:
    if not user_id or user_id in {".", ".."} or any(sep in user_id for sep in ("/", "\\", os.sep, "\0")):
        raise ValueError(f"user_id {user_id!r} cannot name a file of the official save; pass a user_id without "
                         "path separators")
    return user_id


def write_official_save(directory: str | os.PathLike, user_id: str, persona: str, program_state: dict[str, Any],
                        demos: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``<user_id>_persona.txt`` and ``<user_id>.json`` (the judge's DSPy state with official demo keys) into
    ``directory``; return the JSON's path, as the official ``save`` does."""
    from dspy.utils.saving import get_dependency_versions

    directory = Path(directory)
    user_id = _file_safe_user_id(user_id)
    state = {**program_state, "demos": [official_demo(demo) for demo in demos]}
    saved = {OFFICIAL_PROGRAM_KEY: state, "metadata": {"dependency_versions": get_dependency_versions()}}
    program_path = directory / f"{user_id}.json"
    atomic_write_text(directory / f"{user_id}{OFFICIAL_PERSONA_SUFFIX}", persona)
    atomic_write_text(program_path, json.dumps(saved, ensure_ascii=False, indent=2) + "\n")
    return program_path


def read_official_save(directory: str | os.PathLike, user_id: str | None = None) -> dict[str, Any]:
    """An official save folder as an artifact dict (persona, demos with our keys, no settings) for
    :func:`check_artifact`; ``user_id`` None: the folder's only ``*_persona.txt``."""
    directory = Path(directory)
    if user_id is None:
        names = sorted(p.name[: -len(OFFICIAL_PERSONA_SUFFIX)] for p in directory.glob(f"*{OFFICIAL_PERSONA_SUFFIX}"))
        if len(names) != 1:
            found = ", ".join(names) if names else "none"
            raise ArtifactError(directory, None, None, f"expected one <user_id>{OFFICIAL_PERSONA_SUFFIX} of the "
                                                       f"official save, found {found}; pass user_id")
        user_id = names[0]
    user_id = _file_safe_user_id(user_id)
    persona_path, program_path = directory / f"{user_id}{OFFICIAL_PERSONA_SUFFIX}", directory / f"{user_id}.json"
    persona = read_text_file(persona_path, ArtifactError) if persona_path.exists() and persona_path.stat().st_size \
        else ""
    saved = read_artifact_file(program_path)
    if not isinstance(saved, dict):
        raise ArtifactError(program_path, None, None, "expected a JSON object (a saved DSPy program)")
    states = [(key, value) for key, value in saved.items() if key != "metadata" and isinstance(value, dict)]
    if len(states) != 1:
        raise ArtifactError(program_path, None, OFFICIAL_PROGRAM_KEY, "expected the state of one judge predictor")
    key, state = states[0]
    demos = state.get("demos")
    if not isinstance(demos, list):
        raise ArtifactError(program_path, None, f"{key}.demos", "missing or not a list")
    return {"persona": persona, "demos": [_our_demo(demo, f"{key}.demos[{i}]", program_path)
                                          for i, demo in enumerate(demos)],
            "config": {}, "user_id": user_id, "source_layout": "official"}


def _our_demo(demo: Any, name: str, path: Path) -> dict[str, Any]:
    """An official demo with our keys (bootstrapped ones carry the signature's names, labelled ones the row's)."""
    if not isinstance(demo, dict):
        raise ArtifactError(path, None, name, f"must be an object, got {type(demo).__name__}")
    ours = {}
    for key, official in OFFICIAL_DEMO_KEYS.items():
        value = demo.get(official, demo.get(OFFICIAL_LABELED_KEYS.get(key, official)))
        if value is None and key != "reasoning":
            raise ArtifactError(path, None, f"{name}.{official}", "missing")
        if value is not None:
            ours[key] = value
    return ours
