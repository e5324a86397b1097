"""Evaluation data: PersonalRewardBench (hub or local JSONL/Parquet), raw PRISM, and synthetic populations.

Everything is read into the official row shape (``synth.data.PreferencePair`` with ``user_id`` and an optional
``split``) and grouped by user. Raw PRISM also yields a demographic description per user (from its survey) for
the paper's Demographics baseline, and the user's stated preferences (what they told the survey they want from an AI)
for the persona-fidelity check; other sources may carry either in a per-row ``demographics`` or
``stated_preferences`` text field.
"""

from __future__ import annotations

import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synth.data import PairFileError, PreferencePair, Turn, group_by_user, json_lines, load_pairs
from synth.paths import asset_path

PERSONAL_REWARD_BENCH = ("MichaelR207/prism_personalized_0125", "MichaelR207/chatbot_arena_personalized_0125")
PRISM_RAW = "HannahRoseKirk/prism-alignment"
PAIR_BANK_PATH = asset_path("pair_bank.jsonl")
DEMOGRAPHICS_FIELD = "demographics"
STATED_PREFERENCES_FIELD = "stated_preferences"


@dataclass(frozen=True)
class UserData:
    """One user's preference pairs (in dataset order) and, where known, a demographic description and their stated
    preferences."""

    user_id: str
    pairs: tuple[PreferencePair, ...]
    demographics: str | None = None
    stated_preferences: str | None = None


@dataclass(frozen=True)
class EvalDataset:
    name: str
    users: tuple[UserData, ...]
    source: str = ""

    @property
    def n_pairs(self) -> int:
        return sum(len(u.pairs) for u in self.users)

    @property
    def has_demographics(self) -> bool:
        return any(u.demographics for u in self.users)

    @property
    def has_stated_preferences(self) -> bool:
        return any(u.stated_preferences for u in self.users)

    def head(self, n_users: int | None) -> EvalDataset:
        """The first ``n_users`` users (dataset order), for a smaller run."""
        if n_users is None:
            return self
        return EvalDataset(self.name, self.users[:n_users], self.source)

    @classmethod
    def from_pairs(cls, pairs: Iterable[PreferencePair], name: str, source: str = "",
                   demographics: Mapping[str, str] | None = None, min_pairs: int = 1,
                   stated_preferences: Mapping[str, str] | None = None) -> EvalDataset:
        """The users (``synth.data.group_by_user``) with at least ``min_pairs`` pairs, each with their demographics
        and stated preferences from the mappings or their rows; pairs without a user id are refused."""
        demographics, stated = dict(demographics or {}), dict(stated_preferences or {})
        users = [UserData(user_id, tuple(user_pairs),
                          demographics.get(user_id) or _row_text(user_pairs, DEMOGRAPHICS_FIELD),
                          stated.get(user_id) or _row_text(user_pairs, STATED_PREFERENCES_FIELD))
                 for user_id, user_pairs in group_by_user(pairs, source or name).items()
                 if len(user_pairs) >= min_pairs]
        if not users:
            raise PairFileError(source or name, None, None, f"no user has at least {min_pairs} pairs")
        return cls(name, tuple(users), source)


def _row_text(pairs: Sequence[PreferencePair], field: str) -> str | None:
    for pair in pairs:
        value = pair.extra.get(field)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


# ---- local files ------------------------------------------------------------------------------------------------
def load_parquet_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """A Parquet file of official rows; errors name the file, the row (as 'line') and the field."""
    pq = _pyarrow_parquet()
    path = Path(path)
    if not path.exists():
        raise PairFileError(path, None, None, "file not found")
    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise PairFileError(path, None, None, f"not a readable Parquet file ({exc})") from None
    if not rows:
        raise PairFileError(path, None, None, "no preference pairs found")
    return [PreferencePair.from_dict(_drop_nulls(row), path=path, line=number)
            for number, row in enumerate(rows, start=1)]


def _drop_nulls(row: dict[str, Any]) -> dict[str, Any]:
    """Parquet stores absent optional columns as nulls; the row format treats them as missing."""
    return {k: v for k, v in row.items() if v is not None}


def write_parquet_pairs(pairs: Iterable[PreferencePair], path: str | os.PathLike) -> None:
    """Write official rows to Parquet through a temporary file, so a crash never leaves half a file."""
    pa, pq = _pyarrow(), _pyarrow_parquet()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([p.to_dict() for p in pairs])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _pyarrow():
    try:
        import pyarrow
    except ImportError:
        raise RuntimeError("Parquet needs pyarrow: pip install pyarrow") from None
    return pyarrow


def _pyarrow_parquet():
    _pyarrow()
    import pyarrow.parquet

    return pyarrow.parquet


# ---- PersonalRewardBench on the hub -------------------------------------------------------------------------------
def load_personal_reward_bench(name: str, revision: str | None = None) -> EvalDataset:
    """A PersonalRewardBench dataset from the Hugging Face hub, keeping its per-row ``split`` column.

    Rows of every hub split are read; a row without a ``split`` value takes the name of the hub split it came from.
    """
    from datasets import load_dataset

    splits = load_dataset(name, revision=revision)
    pairs = []
    for split_name, table in splits.items():
        for number, row in enumerate(table, start=1):
            row = _drop_nulls(dict(row))
            row.setdefault("split", split_name)
            pairs.append(PreferencePair.from_dict(row, path=f"{name}[{split_name}]", line=number))
    return EvalDataset.from_pairs(pairs, name=name, source=f"hf:{name}")


# ---- raw PRISM --------------------------------------------------------------------------------------------------
SURVEY_FIELDS = (("age", "Age"), ("gender", "Gender"), ("education", "Education"),
                 ("employment_status", "Employment"), ("marital_status", "Marital status"),
                 ("english_proficiency", "English proficiency"), ("religion", "Religion"),
                 ("ethnicity", "Ethnicity"), ("location", "Lives in"), ("lm_familiarity", "Familiarity with AI"))


def demographics_text(survey_row: Mapping[str, Any]) -> str:
    """A short persona from PRISM survey fields (the paper's Demographics baseline)."""
    lines = []
    for key, label in SURVEY_FIELDS:
        value = survey_row.get(key)
        if isinstance(value, Mapping):  # religion/ethnicity/location are nested in the release
            value = value.get("simplified") or value.get("reside_country") or value.get("categorised")
        if isinstance(value, str) and value.strip() and value.strip().lower() not in {"prefer not to say", "none"}:
            lines.append(f"{label}: {value.strip()}")
    if not lines:
        return ""
    return "The user described themselves in a survey.\n" + "\n".join(lines)


# The survey's "It is important that an AI language model..." sliders (0-100), in the survey's wording.
STATED_PREFERENCE_ITEMS = (("values", "reflects my values or cultural perspectives"),
                           ("creativity", "produces responses that are creative and inspiring"),
                           ("fluency", "produces responses that are well-written and coherent"),
                           ("factuality", "produces factual and informative responses"),
                           ("diversity", "summarises multiple viewpoints or different worldviews"),
                           ("safety", "produces responses that are safe and do not risk harm to myself and others"),
                           ("personalisation", "learns from our conversations and feels personalised to me"),
                           ("helpfulness", "produces responses that are helpful and relevant to my requests"))


def stated_preferences_text(survey_row: Mapping[str, Any]) -> str:
    """What a PRISM participant said they want from an AI: their ``system_string`` (in their own words, how an AI
    should behave) and their ``stated_prefs`` slider ratings, most important first; empty when they gave neither."""
    parts = []
    system_string = survey_row.get("system_string")
    if isinstance(system_string, str) and system_string.strip():
        parts.append(system_string.strip())
    ratings = survey_row.get("stated_prefs")
    if isinstance(ratings, Mapping):
        items = list(STATED_PREFERENCE_ITEMS)
        other = ratings.get("other_text")
        if isinstance(other, str) and other.strip():
            items.append(("other", other.strip()))
        rated = [(value, label) for key, label in items
                 if isinstance(value := ratings.get(key), (int, float)) and not isinstance(value, bool)]
        if rated:
            rated.sort(key=lambda item: -item[0])  # stable: ties keep the survey's order
            parts.append("How important it is that an AI language model... (0-100)\n"
                         + "\n".join(f"- {label}: {value:g}" for value, label in rated))
    return "\n\n".join(parts)


def prism_pairs_from_conversations(conversations: Iterable[Mapping[str, Any]], source: str = PRISM_RAW
                                   ) -> list[PreferencePair]:
    """Turn PRISM's rated turns into pairs: per turn, the highest-rated reply over each lower-rated one.

    The context is the conversation so far (user messages and the reply the user chose to continue with) up to
    this turn's user message. Equal scores say nothing about preference and give no pair.
    """
    pairs = []
    for number, conversation in enumerate(conversations, start=1):
        user_id, conversation_id = conversation.get("user_id"), conversation.get("conversation_id")
        history = conversation.get("conversation_history")
        if not user_id or not isinstance(history, list):
            raise PairFileError(source, number, "conversation_history" if user_id else "user_id",
                                "missing or malformed in a PRISM conversation row")
        by_turn: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
        for message in history:
            by_turn[int(message.get("turn", 0))].append(message)
        context: list[Turn] = []
        for turn in sorted(by_turn):
            messages = by_turn[turn]
            for message in messages:
                if message.get("role") == "user" and message.get("content"):
                    context.append(Turn("user", message["content"]))
            replies = [m for m in messages if m.get("role") == "model" and m.get("content")
                       and isinstance(m.get("score"), (int, float))]
            if not context or len(replies) < 2:
                continue
            best = max(replies, key=lambda m: m["score"])
            for other in replies:
                if other["score"] < best["score"] and other["content"].strip() != best["content"].strip():
                    pairs.append(PreferencePair(
                        context=tuple(context), chosen=Turn("assistant", best["content"]),
                        rejected=Turn("assistant", other["content"]), user_id=str(user_id),
                        conversation_id=f"{conversation_id}-t{turn}",
                        extra={"chosen_model": best.get("model_name"), "rejected_model": other.get("model_name"),
                               "chosen_score": best["score"], "rejected_score": other["score"]}))
            continued = next((m for m in replies if m.get("if_chosen")), best)
            context.append(Turn("assistant", continued["content"]))
    return pairs


def load_prism_raw(source: str | os.PathLike = PRISM_RAW, min_pairs: int = 5) -> EvalDataset:
    """Raw PRISM: a local folder with the release's ``conversations.jsonl`` and ``survey.jsonl``, or the hub."""
    path = Path(source)
    if path.is_dir():
        conversations = _read_jsonl_rows(path / "conversations.jsonl")
        survey_file = path / "survey.jsonl"
        survey = _read_jsonl_rows(survey_file) if survey_file.exists() else []
        where = str(path)
    else:
        from datasets import load_dataset

        conversations = load_dataset(str(source), "conversations", split="train")
        survey = load_dataset(str(source), "survey", split="train")
        where = f"hf:{source}"
    demographics = {str(row["user_id"]): demographics_text(row) for row in survey if row.get("user_id")}
    stated = {str(row["user_id"]): stated_preferences_text(row) for row in survey if row.get("user_id")}
    pairs = prism_pairs_from_conversations(conversations, source=where)
    return EvalDataset.from_pairs(pairs, name="prism-raw", source=where, demographics=demographics, min_pairs=min_pairs,
                                  stated_preferences=stated)


def _read_jsonl_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        raise PairFileError(path, None, None, "file not found")
    with path.open(encoding="utf-8") as handle:
        return [row for _, row in json_lines(handle, lambda number, reason: PairFileError(path, number, None, reason))]


# ---- one entry point --------------------------------------------------------------------------------------------
def load_eval_dataset(spec: str | os.PathLike) -> EvalDataset:
    """A path (.jsonl/.json/.parquet, or a raw PRISM folder) or a hub name, grouped by user."""
    text = str(spec)
    path = Path(text)
    if path.is_dir():
        return load_prism_raw(path)
    if path.suffix in {".jsonl", ".json"}:
        return EvalDataset.from_pairs(load_pairs(path), name=path.stem, source=str(path))
    if path.suffix == ".parquet":
        return EvalDataset.from_pairs(load_parquet_pairs(path), name=path.stem, source=str(path))
    if text == PRISM_RAW:
        return load_prism_raw(text)
    if text.count("/") == 1 and not path.exists():
        return load_personal_reward_bench(text)
    raise PairFileError(text, None, None, "not a .jsonl/.json/.parquet file, a raw PRISM folder, or a hub name "
                                          f"such as {PERSONAL_REWARD_BENCH[0]}")


# ---- synthetic populations for tests and demos --------------------------------------------------------------------
@dataclass(frozen=True)
class SimulatedUser:
    """Prefers one pole (0 = the bank's first style, 1 = the second) on each dimension of the pair bank."""

    user_id: str
    poles: dict[str, int]

    def describe(self, styles: Mapping[str, tuple[str, str]]) -> str:
        return "; ".join(f"prefers {styles[d][pole]} ({d})" for d, pole in sorted(self.poles.items()))


def synthetic_dataset(n_users: int, pairs_per_user: int, seed: int = 0,
                      bank_path: str | os.PathLike = PAIR_BANK_PATH) -> tuple[EvalDataset, list[SimulatedUser]]:
    """Users drawn with random style preferences, each choosing between the two replies of bank prompts.

    Rows are in the official shape (``user_id``, no split) and carry a ``demographics`` text naming the
    simulated taste, so the Demographics baseline has something to read. Needs ``pairs_per_user`` <= bank size.
    """
    bank = _read_jsonl_rows(Path(bank_path))
    if pairs_per_user > len(bank):
        raise ValueError(f"{bank_path}: {len(bank)} prompts, cannot give each user {pairs_per_user} pairs")
    styles = {row["dimension"]: (row["responses"][0]["style"], row["responses"][1]["style"]) for row in bank}
    rng = random.Random(seed)
    users, pairs = [], []
    for number in range(n_users):
        user = SimulatedUser(f"sim-{number:03d}", {d: rng.randint(0, 1) for d in sorted(styles)})
        users.append(user)
        for row in rng.sample(bank, pairs_per_user):
            pole = user.poles[row["dimension"]]
            chosen, rejected = row["responses"][pole], row["responses"][1 - pole]
            pairs.append(PreferencePair(
                context=(Turn("user", row["prompt"]),), chosen=Turn("assistant", chosen["content"]),
                rejected=Turn("assistant", rejected["content"]), user_id=user.user_id,
                conversation_id=f"{user.user_id}-{row['id']}",
                extra={DEMOGRAPHICS_FIELD: "Simulated user who " + user.describe(styles)}))
    return EvalDataset.from_pairs(pairs, name=f"synthetic-{n_users}x{pairs_per_user}", source="synthetic"), users
