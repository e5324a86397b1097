"""Preference pairs in the official SynthesizeMe / PersonalRewardBench row shape, with strict validation.

A row is ``{"context": [{"role", "content"}, ...], "chosen": {"role", "content"},
"rejected": {"role", "content"}, "user_id"?, "conversation_id"?, "split"?, "flip"?}``. Files are JSONL (one row
per line) or a JSON list. Rows the official library reads are read here too (role names such as ``human``/``bot``,
numeric ids, a single-turn context object); rows that say nothing (an empty turn, two identical replies) are refused.
Every error names the file, the line and the field so a user can fix it at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONTEXT_ROLES = frozenset({"user", "assistant", "model", "system"})
COMPLETION_ROLES = frozenset({"assistant", "model"})
# Role names other exports use, read as ours (the official library formats whatever role it is given).
ROLE_ALIASES = {"human": "user", "bot": "assistant", "gpt": "assistant", "ai": "assistant", "chatbot": "assistant"}
OPTIONAL_TEXT_FIELDS = ("user_id", "conversation_id", "split")
# A turn above this size is almost certainly a pasted file, not a conversation; refuse it outright.
MAX_TURN_CHARS = 200_000
MAX_FILE_BYTES = 256 * 1024 * 1024
# Extra fields are carried through unchanged; deeper nesting than this is refused before anything recurses on it.
MAX_NESTING = 32
TOO_DEEP = "JSON nested too deeply to read"


class DataFileError(ValueError):
    """A data file (preference pairs, personas, ...) could not be read; the message names file, line and field."""

    def __init__(self, path: str | os.PathLike | None, line: int | None, field_name: str | None, problem: str):
        self.path = str(path) if path is not None else "<input>"
        self.line = line
        self.field_name = field_name
        self.problem = problem
        where = [self.path]
        if line is not None:
            where.append(f"line {line}")
        if field_name:
            where.append(f"field '{field_name}'")
        super().__init__(f"{', '.join(where)}: {problem}")


class PairFileError(DataFileError):
    """A preference file could not be read."""


@dataclass(frozen=True)
class Turn:
    """One message of a conversation."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class PreferencePair:
    """A user's choice between two completions of the same conversation."""

    context: tuple[Turn, ...]
    chosen: Turn
    rejected: Turn
    user_id: str | None = None
    conversation_id: str | None = None
    split: str | None = None
    flip: bool | None = None  # the official column: True shows the chosen reply first to the judge
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "context": [t.to_dict() for t in self.context],
            "chosen": self.chosen.to_dict(),
            "rejected": self.rejected.to_dict(),
        }
        for name in OPTIONAL_TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                row[name] = value
        if self.flip is not None:
            row["flip"] = self.flip
        row.update(self.extra)
        return row

    @property
    def prompt(self) -> str:
        """The last user message: what the two completions answer."""
        for turn in reversed(self.context):
            if turn.role == "user":
                return turn.content
        return self.context[-1].content if self.context else ""

    @classmethod
    def from_dict(cls, row: Any, *, path: str | os.PathLike | None = None, line: int | None = None) -> PreferencePair:
        """Validate one row; raise PairFileError naming the offending field."""

        def fail(field_name: str | None, problem: str) -> PairFileError:
            return PairFileError(path, line, field_name, problem)

        if not isinstance(row, dict):
            raise fail(None, f"expected a JSON object, got {type(row).__name__}")
        for required in ("context", "chosen", "rejected"):
            if required not in row:
                raise fail(required, "missing required field")
        context = row["context"]
        if isinstance(context, str):  # a bare prompt string is a one-turn conversation
            context = [{"role": "user", "content": context}]
        elif isinstance(context, dict):  # one turn given as an object
            context = [context]
        if not isinstance(context, list) or not context:
            raise fail("context", "must be a non-empty list of {role, content} turns")
        turns = tuple(_parse_turn(t, f"context[{i}]", CONTEXT_ROLES, fail) for i, t in enumerate(context))
        chosen = _parse_turn(row["chosen"], "chosen", COMPLETION_ROLES, fail)
        rejected = _parse_turn(row["rejected"], "rejected", COMPLETION_ROLES, fail)
        if chosen.content.strip() == rejected.content.strip():
            raise fail("rejected", "chosen and rejected completions are identical; the pair says nothing")
        optional = {name: _optional_text(row.get(name), name, fail) for name in OPTIONAL_TEXT_FIELDS}
        flip = row.get("flip")
        if flip is not None and not isinstance(flip, bool):
            raise fail("flip", f"must be true or false, got {type(flip).__name__}")
        known = {"context", "chosen", "rejected", "flip", *OPTIONAL_TEXT_FIELDS}
        extra = {k: v for k, v in row.items() if k not in known}
        for name, value in extra.items():
            if _nesting(value, MAX_NESTING) > MAX_NESTING:
                raise fail(name, f"nested more than {MAX_NESTING} levels deep")
        return cls(context=turns, chosen=chosen, rejected=rejected, flip=flip, extra=extra, **optional)

    def with_split(self, split: str) -> PreferencePair:
        return dataclasses.replace(self, split=split, extra=dict(self.extra))


def _optional_text(value: Any, name: str, fail) -> str | None:
    """An id or split: text, or a number read as text (``12`` and ``12.0`` both become ``"12"``)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise fail(name, f"must be a string, got {type(value).__name__}")
    return str(int(value)) if float(value).is_integer() else str(value)


def _nesting(value: Any, limit: int, depth: int = 0) -> int:
    """How deep lists and objects nest in ``value``, counting no further than one past ``limit``."""
    if depth > limit or not isinstance(value, (dict, list)):
        return depth
    children = value.values() if isinstance(value, dict) else value
    return max((_nesting(child, limit, depth + 1) for child in children), default=depth + 1)


def as_pairs(rows: Iterable[PreferencePair | dict[str, Any]], source: str = "<rows>") -> list[PreferencePair]:
    """Pairs from pairs or official row dicts (what ``fit(data)`` takes); a bad row is named by its position (from 1)
    as its line."""
    return [row if isinstance(row, PreferencePair) else PreferencePair.from_dict(row, path=source, line=number)
            for number, row in enumerate(rows, start=1)]


def _parse_turn(value: Any, name: str, roles: frozenset[str], fail) -> Turn:
    if isinstance(value, str):  # some exports store completions as bare strings
        value = {"role": "assistant", "content": value}
    if not isinstance(value, dict):
        raise fail(name, f"must be an object with 'role' and 'content', got {type(value).__name__}")
    role, content = value.get("role"), value.get("content")
    if not isinstance(role, str):
        raise fail(f"{name}.role", "missing or not a string")
    role = ROLE_ALIASES.get(role.strip().lower(), role.strip().lower())
    if role not in roles:
        raise fail(f"{name}.role", f"'{role}' is not one of {sorted(roles)}")
    if not isinstance(content, str):
        raise fail(f"{name}.content", "missing or not a string")
    if not content.strip():
        raise fail(f"{name}.content", "empty content")
    if len(content) > MAX_TURN_CHARS:
        raise fail(f"{name}.content", f"{len(content):,} characters is over the {MAX_TURN_CHARS:,} limit for one turn")
    return Turn(role=role, content=content)


def read_text_file(path: Path, error: type[DataFileError] = PairFileError) -> str:
    """A data file's text, refusing a missing, empty, oversized, binary or non-UTF-8 file with ``error``."""
    if not path.exists():
        raise error(path, None, None, "file not found")
    size = path.stat().st_size
    if size == 0:
        raise error(path, None, None, "file is empty")
    if size > MAX_FILE_BYTES:
        raise error(path, None, None, f"file is {size:,} bytes, over the {MAX_FILE_BYTES:,} byte limit")
    try:
        raw = path.read_bytes()
    except OSError as exc:  # a folder, or no permission
        raise error(path, None, None, f"cannot read file ({exc.strerror})") from None
    if b"\x00" in raw[:8192]:
        raise error(path, None, None, "looks like a binary file, expected JSONL or JSON text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(path, line, None, "not valid UTF-8 text") from None
    if not text.strip():
        raise error(path, None, None, "file is empty")
    return text


def json_lines(lines: Iterable[str], fail: Callable[[int, str], Exception]) -> Iterator[tuple[int, Any]]:
    """Each non-blank line's number (from 1) and parsed JSON. A line that is not JSON raises ``fail(number, reason)``,
    so every JSONL reader reports bad lines the same way, in its own error type."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fail(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise fail(number, TOO_DEEP) from None
        yield number, record


def parse_json(text: str, fail: Callable[[int | None, str], Exception]) -> Any:
    """One JSON document; bad JSON or nesting too deep for Python raises ``fail(line, reason)``, never a traceback."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(exc.lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise fail(None, TOO_DEEP) from None


def parse_pairs_text(text: str, path: str | os.PathLike | None = None) -> list[PreferencePair]:
    """Parse JSONL or a JSON list, keeping file line numbers for errors."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        return _parse_json_list(text, path)
    pairs = [PreferencePair.from_dict(row, path=path, line=number)
             for number, row in json_lines(text.splitlines(),
                                           lambda number, reason: PairFileError(path, number, None, reason))]
    if not pairs:
        raise PairFileError(path, None, None, "no preference pairs found")
    return pairs


def _parse_json_list(text: str, path) -> list[PreferencePair]:
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    pairs: list[PreferencePair] = []

    def line_of(offset: int) -> int:
        return text.count("\n", 0, offset) + 1

    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            raise PairFileError(path, line_of(position), None, "JSON list is not closed with ']'")
        if text[position] == "]":
            break
        try:
            row, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise PairFileError(path, exc.lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise PairFileError(path, line_of(position), None, TOO_DEEP) from None
        pairs.append(PreferencePair.from_dict(row, path=path, line=line_of(position)))
        position = end
    if text[position + 1:].strip():
        raise PairFileError(path, line_of(position + 1), None, "unexpected text after the JSON list")
    if not pairs:
        raise PairFileError(path, None, None, "no preference pairs found")
    return pairs


def load_pairs(path: str | os.PathLike) -> list[PreferencePair]:
    """Read a JSONL or JSON-list file of preference pairs; raise PairFileError on any problem."""
    path = Path(path)
    return parse_pairs_text(read_text_file(path), path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write through a temporary file and rename, so a crash never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_pairs(pairs: Iterable[PreferencePair], path: str | os.PathLike) -> None:
    """Write JSONL (or a JSON list when the name ends in .json) in the official row shape."""
    rows = [p.to_dict() for p in pairs]
    if str(path).endswith(".json"):
        text = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    atomic_write_text(path, text)


def split_train_validation(pairs: Sequence[PreferencePair], train_val_ratio: float = 0.7
                           ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """The official library's rule: the first ⌊ratio · n⌋ pairs in the given order train, the rest validate (the
    order is kept: a user's pairs are often in time order).

    Pairs that carry ``split`` = train/val(idation) are honoured instead. At least one pair stays on each side
    whenever there are two or more.
    """
    if not 0 < train_val_ratio < 1:
        raise ValueError(f"train_val_ratio must be between 0 and 1, got {train_val_ratio}")
    marked_val = [p for p in pairs if (p.split or "").lower() in {"val", "validation", "dev"}]
    marked_train = [p for p in pairs if (p.split or "").lower() in {"train", "context"}]
    if marked_val and marked_train:
        return marked_train, marked_val
    pairs = list(pairs)
    if len(pairs) < 2:
        raise ValueError(f"need at least 2 preference pairs to fit (one to learn from, one to validate), "
                         f"got {len(pairs)}")
    n_train = min(len(pairs) - 1, max(1, math.floor(len(pairs) * train_val_ratio)))
    return pairs[:n_train], pairs[n_train:]


def group_by_user(pairs: Iterable[PreferencePair], source: str | os.PathLike | None = None
                  ) -> dict[str, list[PreferencePair]]:
    """Each user's pairs in their given order, users in first-seen order. A pair with no ``user_id`` is refused,
    naming ``source`` and the pair's position (from 1) as its line."""
    users: dict[str, list[PreferencePair]] = {}
    for number, pair in enumerate(pairs, start=1):
        if not pair.user_id:
            raise PairFileError(source, number, "user_id", "missing; pairs are grouped by user, so every pair "
                                                           "needs one")
        users.setdefault(pair.user_id, []).append(pair)
    return users


def truncate_middle(text: str, limit: int) -> str:
    """Keep the start and end of a long turn; the middle is the least informative for a judge."""
    if limit <= 0 or len(text) <= limit:
        return text
    keep = max(limit - 40, 20)
    head, tail = text[: keep * 2 // 3], text[-(keep - keep * 2 // 3):]
    return f"{head}\n[... {len(text) - len(head) - len(tail):,} characters omitted ...]\n{tail}"


def render_conversation(context: Sequence[Turn], max_turn_chars: int) -> str:
    """Plain, model-agnostic rendering of the conversation that precedes the two completions."""
    names = {"user": "User", "assistant": "Assistant", "model": "Assistant", "system": "System"}
    return "\n\n".join(f"{names.get(t.role, t.role)}: {truncate_middle(t.content, max_turn_chars)}" for t in context)
