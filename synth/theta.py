"""Θ, the persona-writing program: a chain-of-thought DSPy module saved as a file, optimisable once with MIPROv2.

The paper's Θ reasons about the verified choices, then writes the persona; MIPROv2 optimises its instruction and its
few-shot demos once (on PRISM), and the result is reused across users and models. A Θ made with a larger model can
be "distilled" into a smaller one by running it there (``synth eval --theta``). A Θ file is what ``dspy.Module.save``
writes; its id is a short hash of that file, recorded in every artifact so results say which Θ made them.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import dspy

from synth.data import DataFileError, parse_json, read_text_file
from synth.lm.budget import fit_prompt, prompt_budget
from synth.lm.sampling import GenerationParams
from synth.paths import asset_path
from synth.signatures import TolerantChatAdapter, WritePersona

DEFAULT_THETA_PATH = asset_path("theta_default.json")


PERSONA_MARKER = "[[ ## persona ## ]]"
COMPLETED_MARKER = "[[ ## completed ## ]]"


class PersonaWriter(dspy.Module):
    """Turns notes on a person's verified choices into a short natural-language persona, reasoning first.

    Its demos (worked examples MIPROv2 found) are ranked; when a call would not fit the model's context the
    lowest-ranked are left out, then the notes are cut in the middle (``synth.lm.budget.fit_prompt``). ``config``
    is DSPy's per-call config.

    Given ``reasoning_tokens`` and ``persona_tokens``, each part has its own budget. A local model then writes them
    the way the judge writes its reasoning and verdict: the reasoning up to the persona's field, then the persona as
    the continuation of that same answer, so a long reasoning can never leave the persona unwritten. Other models
    write both in one call of ``reasoning_tokens + persona_tokens``.
    """

    def __init__(self):
        super().__init__()
        self.write = dspy.ChainOfThought(WritePersona)

    @property
    def predictor(self) -> dspy.Predict:
        return self.write.predict

    def forward(self, preference_notes: str, config: dict | None = None, reasoning_tokens: int | None = None,
                persona_tokens: int | None = None) -> dspy.Prediction:
        config = dict(config or {})
        lm = dspy.settings.lm
        adapter = dspy.settings.adapter or TolerantChatAdapter()
        signature = self.predictor.signature
        budgeted = reasoning_tokens is not None and persona_tokens is not None
        if budgeted:
            config["max_tokens"] = reasoning_tokens + persona_tokens
        answer_tokens = int(config.get("max_tokens") or getattr(lm, "kwargs", {}).get("max_tokens") or 512)
        fitted = fit_prompt(prompt_budget(lm), lambda demos, inputs: adapter.format(signature, demos, inputs),
                            list(self.predictor.demos), {"preference_notes": preference_notes}, answer_tokens,
                            cuttable=("preference_notes",))
        engine = getattr(lm, "engine", None)
        if not budgeted or not (hasattr(engine, "generate") and hasattr(engine, "prompts")):
            return self.write(**fitted.inputs, demos=fitted.demos, config=config)
        reasoning = self.write(**fitted.inputs, demos=fitted.demos,
                               config={**config, "stop": (PERSONA_MARKER,), "max_tokens": reasoning_tokens})
        reasoning_text = (reasoning.reasoning or "").strip()
        messages = adapter.format(signature, fitted.demos, fitted.inputs)
        prefix = f"[[ ## reasoning ## ]]\n{reasoning_text}\n\n{PERSONA_MARKER}\n"
        params = GenerationParams(max_new_tokens=persona_tokens, temperature=float(config.get("temperature") or 0.0),
                                  stop=(COMPLETED_MARKER, "[[ ##"))
        written = engine.generate([engine.prompts.render(messages, assistant_prefix=prefix)], [params])[0]
        return dspy.Prediction(reasoning=reasoning_text, persona=written.text.strip())


def theta_id(path: str | Path) -> str:
    return "theta-" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


class ThetaFileError(DataFileError):
    """A Θ file could not be loaded; the message names the file and the field."""


THETA_PROGRAM_KEY = "write.predict"  # where ``dspy.Module.save`` puts the state of Θ's one predictor
DEMO_FLAG = "augmented"  # DSPy marks a bootstrapped demo with it


def load_theta(path: str | Path | None = None) -> tuple[PersonaWriter, str]:
    """Load a saved Θ (default: the bundled one) and return it with its id.

    A Θ file is data: only its instruction, its fields' prefixes and descriptions and its demos are read, each
    type-checked (:class:`ThetaFileError` names the field). Nothing else in it reaches the program: no LM of its own
    (a Θ runs on the model it is used with; that is what distilling is) and no call settings.
    """
    path = Path(path) if path else DEFAULT_THETA_PATH
    saved = parse_json(read_text_file(path, ThetaFileError), lambda line, reason: ThetaFileError(path, line, None,
                                                                                                  reason))
    writer = PersonaWriter()
    writer.load_state({THETA_PROGRAM_KEY: _checked_program_state(saved, writer, path)})
    return writer, theta_id(path)


def _checked_program_state(saved: Any, writer: PersonaWriter, path: Path) -> dict[str, Any]:
    """The predictor state of a saved Θ with every field DSPy would read type-checked, and nothing else."""

    def fail(field_name: str | None, problem: str) -> ThetaFileError:
        return ThetaFileError(path, None, field_name, f"{problem}; not a saved persona-writing program")

    if not isinstance(saved, dict):
        raise fail(None, f"expected a JSON object, got {type(saved).__name__}")
    state = saved.get(THETA_PROGRAM_KEY)
    if not isinstance(state, dict):
        raise fail(THETA_PROGRAM_KEY, "missing or not an object (a Θ is a chain-of-thought program; "
                                      f"found {', '.join(map(repr, saved)) or 'no keys'})")
    signature = state.get("signature")
    where = f"{THETA_PROGRAM_KEY}.signature"
    if not isinstance(signature, dict):
        raise fail(where, "missing or not an object")
    if not isinstance(signature.get("instructions"), str) or not signature["instructions"].strip():
        raise fail(f"{where}.instructions", "missing, empty or not a string")
    names = list(writer.predictor.signature.fields)
    fields = signature.get("fields")
    if not isinstance(fields, list) or len(fields) != len(names):
        raise fail(f"{where}.fields", f"must be a list of {len(names)} objects ({', '.join(names)})")
    for i, entry in enumerate(fields):
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("prefix", "description")):
            raise fail(f"{where}.fields[{i}]", "must be an object with string 'prefix' and 'description'")
    demos = state.get("demos", [])
    if not isinstance(demos, list):
        raise fail(f"{THETA_PROGRAM_KEY}.demos", f"must be a list of objects, got {type(demos).__name__}")
    for i, demo in enumerate(demos):
        name = f"{THETA_PROGRAM_KEY}.demos[{i}]"
        if not isinstance(demo, dict) or not isinstance(demo.get("preference_notes"), str):
            raise fail(name, "must be an object with a string 'preference_notes'")
        for key, value in demo.items():
            if key not in names and key != DEMO_FLAG:
                raise fail(f"{name}.{key}", f"not a field of Θ ({', '.join(names)})")
            if key != DEMO_FLAG and not isinstance(value, str):
                raise fail(f"{name}.{key}", f"must be a string, got {type(value).__name__}")
    return {"signature": {"instructions": signature["instructions"],
                          "fields": [{"prefix": f["prefix"], "description": f["description"]} for f in fields]},
            "demos": demos, "traces": [], "train": [], "lm": None}


def save_theta(writer: PersonaWriter, path: str | Path) -> str:
    """Save atomically; return the new Θ id."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as staging:
        staged = Path(staging) / path.name
        writer.save(str(staged))
        staged.replace(path)
    return theta_id(path)


def theta_instructions(writer: PersonaWriter) -> str:
    return writer.predictor.signature.instructions
