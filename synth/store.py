"""SQLite persona store (WAL mode) shared by the app, batch runs and imports.

One row per anonymous user: the persona, its trait statements, the model, the source (demo / batch / import), the
time and the consent flag. That is all a contribution stores unless its author gave a second, separate consent for
the evidence behind the persona (``Evidence``: the reasoning, and pairs whose texts are public). A row made in the
app also keeps the hash of a deletion code its author holds, and the author's own ratings of the statements ("is
this you?"), stored only with their consent.

Every write is one transaction that also raises one of two counters, so a reader can tell in one cheap query what
changed: the revision (personas added, replaced or removed: the insights tab re-fits only then) or the ratings
revision (a visitor's "is this you?" answers: only the confirmation figures are recomputed). A writer killed at any
point leaves either the whole write or nothing, and committed rows survive (WAL with synchronous=FULL). Connections
are opened per operation, so threads and processes can share one file; SQLite's locking plus a busy timeout
serialises writers.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synth.fidelity import VERDICTS
from synth.insights.types import Persona

SOURCES = ("demo", "batch", "import")
_SCHEMA_VERSION = 2
_COLUMNS = "user_id, persona, statements, model, source, created_at, consent, evidence, ratings"
_TABLES = """
CREATE TABLE IF NOT EXISTS personas (
    user_id       TEXT PRIMARY KEY,
    persona       TEXT NOT NULL,
    statements    TEXT NOT NULL DEFAULT '[]',
    model         TEXT NOT NULL DEFAULT '',
    source        TEXT NOT NULL CHECK (source IN ('demo', 'batch', 'import')),
    created_at    TEXT NOT NULL,
    consent       INTEGER NOT NULL CHECK (consent IN (0, 1)),
    evidence      TEXT,
    ratings       TEXT,
    deletion_hash TEXT
);
CREATE INDEX IF NOT EXISTS personas_deletion ON personas (deletion_hash);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('revision', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('ratings_revision', 0);
"""
# Version 1 kept a whole artifact per row (every pair, with any extra field of an imported file, and every trace),
# published without a separate consent: the upgrade drops it rather than carry it over as consented evidence.
_FROM_VERSION_1 = """
ALTER TABLE personas DROP COLUMN artifact;
ALTER TABLE personas ADD COLUMN evidence TEXT;
ALTER TABLE personas ADD COLUMN ratings TEXT;
ALTER TABLE personas ADD COLUMN deletion_hash TEXT;
"""


def new_user_id() -> str:
    """A random anonymous id; it carries nothing about the person."""
    return "u-" + secrets.token_hex(8)


def new_deletion_code() -> str:
    """A secret the contributor keeps to remove their persona later; the store keeps only its hash."""
    return secrets.token_urlsafe(12)


def deletion_hash(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Evidence:
    """What a contributor consented to show behind their persona: the reasoning that was kept, and the pairs it
    judged, only where the pair's texts are public (the bundled bank's)."""

    reasoning: tuple[str, ...] = ()
    pairs: tuple[dict[str, str], ...] = ()

    def to_json(self) -> str:
        return json.dumps({"reasoning": list(self.reasoning), "pairs": list(self.pairs)}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Evidence:
        data = json.loads(text)
        return cls(tuple(data.get("reasoning", ())), tuple(data.get("pairs", ())))


@dataclass(frozen=True)
class PersonaRecord:
    user_id: str
    persona: str
    source: str
    consent: bool
    statements: tuple[str, ...] = ()
    model: str = ""
    created_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    evidence: Evidence | None = None  # None: no consent for the evidence (or not read: ``list`` leaves it out)
    ratings: Mapping[str, str] = field(default_factory=dict)  # statement -> one of synth.fidelity.VERDICTS

    def to_persona(self) -> Persona:
        return Persona(self.user_id, self.persona, self.statements)


class PersonaStore:
    """add / add_many / get / list / ratings / delete / set_ratings / count / revision / ratings_revision over one
    SQLite file at `path`."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            connection.execute("BEGIN IMMEDIATE")
            try:
                if version > _SCHEMA_VERSION:
                    raise ValueError(f"{self.path}: store schema {version} is newer than this synth "
                                     f"({_SCHEMA_VERSION}); upgrade synth")
                for statement in (_FROM_VERSION_1 if version == 1 else "").split(";") + _TABLES.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None
        )
        try:
            connection.execute("PRAGMA synchronous=FULL")
            yield connection
        finally:
            connection.close()

    @contextmanager
    def _write(self, counter: str = "revision") -> Iterator[sqlite3.Connection]:
        """One transaction that raises ``counter`` (revision or ratings_revision) with whatever it writes."""
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("UPDATE meta SET value = value + 1 WHERE key = ?", (counter,))
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    @staticmethod
    def _row(record: PersonaRecord, deletion_code: str | None) -> tuple[Any, ...]:
        if record.source not in SOURCES:
            raise ValueError(
                f"source must be one of {', '.join(SOURCES)}, got {record.source!r}"
            )
        if not record.user_id.strip() or not record.persona.strip():
            raise ValueError("user_id and persona must not be empty")
        return (
            record.user_id,
            record.persona,
            json.dumps(list(record.statements), ensure_ascii=False),
            record.model,
            record.source,
            record.created_at,
            int(bool(record.consent)),
            None if record.evidence is None else record.evidence.to_json(),
            _ratings_json(record.ratings),
            None if deletion_code is None else deletion_hash(deletion_code),
        )

    def add(self, record: PersonaRecord, deletion_code: str | None = None) -> None:
        """Insert, or replace the row of the same user (a user's newest persona supersedes the old one);
        ``deletion_code`` lets its holder remove the row with ``delete_with_code``."""
        self._add_rows([self._row(record, deletion_code)])

    def add_many(self, records: Iterable[PersonaRecord]) -> int:
        """Write all records in one transaction (all or nothing); returns how many were written. A record that
        replaces one with a deletion code keeps that code."""
        return self._add_rows([self._row(record, None) for record in records])

    def _add_rows(self, rows: list[tuple[Any, ...]]) -> int:
        with self._write() as connection:
            connection.executemany(
                f"INSERT INTO personas ({_COLUMNS}, deletion_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(user_id) DO UPDATE SET persona=excluded.persona, statements=excluded.statements,"
                " model=excluded.model, source=excluded.source, created_at=excluded.created_at,"
                " consent=excluded.consent, evidence=excluded.evidence, ratings=excluded.ratings,"
                " deletion_hash=COALESCE(excluded.deletion_hash, personas.deletion_hash)",
                rows,
            )
        return len(rows)

    def get(self, user_id: str) -> PersonaRecord | None:
        """One user's record with its evidence (the only read that parses evidence)."""
        with self._connection() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM personas WHERE user_id = ?", (user_id,)
            ).fetchone()
        return None if row is None else _record(row)

    def list(
        self,
        consented_only: bool = False,
        sources: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[PersonaRecord]:
        """Records oldest first, without their evidence (read one user's with ``get``)."""
        query = f"SELECT {_COLUMNS.replace('evidence', 'NULL')} FROM personas"
        conditions: list[str] = []
        arguments: list[Any] = []
        if consented_only:
            conditions.append("consent = 1")
        if sources is not None:
            conditions.append(f"source IN ({','.join('?' * len(sources))})")
            arguments.extend(sources)
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        query += " ORDER BY created_at, rowid"
        if limit is not None:
            query += " LIMIT ?"
            arguments.append(int(limit))
        with self._connection() as connection:
            return [_record(row) for row in connection.execute(query, arguments)]

    def ratings(self, consented_only: bool = False) -> dict[str, dict[str, str]]:
        """Every user's statement ratings (user id -> statement -> rating), users without any left out."""
        query = "SELECT user_id, ratings FROM personas WHERE ratings IS NOT NULL" + (
            " AND consent = 1" if consented_only else "")
        with self._connection() as connection:
            return {user_id: json.loads(text) for user_id, text in connection.execute(query)}

    def set_ratings(self, user_id: str, ratings: Mapping[str, str]) -> bool:
        """Replace a user's statement ratings; True if the user has a row. Raises the ratings revision only: the
        personas are unchanged."""
        with self._write("ratings_revision") as connection:
            return connection.execute("UPDATE personas SET ratings = ? WHERE user_id = ?",
                                      (_ratings_json(ratings), user_id)).rowcount > 0

    def delete(self, user_id: str) -> bool:
        """Remove a user's persona; True if there was one."""
        with self._write() as connection:
            return connection.execute("DELETE FROM personas WHERE user_id = ?", (user_id,)).rowcount > 0

    def delete_with_code(self, code: str) -> bool:
        """Remove the persona whose deletion code this is; True if there was one."""
        if not code.strip():
            return False
        with self._write() as connection:
            return connection.execute("DELETE FROM personas WHERE deletion_hash = ?",
                                      (deletion_hash(code),)).rowcount > 0

    def count(self, consented_only: bool = False) -> int:
        query = "SELECT COUNT(*) FROM personas" + (
            " WHERE consent = 1" if consented_only else ""
        )
        with self._connection() as connection:
            return int(connection.execute(query).fetchone()[0])

    def revision(self) -> int:
        """A number that grows with every write of personas: equal revisions mean the same personas."""
        return self._counter("revision")

    def ratings_revision(self) -> int:
        """A number that grows with every ``set_ratings``: equal values mean the same ratings since then."""
        return self._counter("ratings_revision")

    def _counter(self, key: str) -> int:
        with self._connection() as connection:
            return int(connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])


def _ratings_json(ratings: Mapping[str, str]) -> str | None:
    unknown = sorted({value for value in ratings.values() if value not in VERDICTS})
    if unknown:
        raise ValueError(f"ratings must be one of {', '.join(VERDICTS)}, got {', '.join(map(repr, unknown))}")
    return json.dumps(dict(ratings), ensure_ascii=False) if ratings else None


def _record(row: tuple[Any, ...]) -> PersonaRecord:
    user_id, persona, statements, model, source, created_at, consent, evidence, ratings = row
    return PersonaRecord(
        user_id=user_id,
        persona=persona,
        source=source,
        consent=bool(consent),
        statements=tuple(json.loads(statements)),
        model=model,
        created_at=created_at,
        evidence=None if evidence is None else Evidence.from_json(evidence),
        ratings={} if ratings is None else json.loads(ratings),
    )
