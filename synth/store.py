"""SQLite persona store (WAL mode) shared by the app, batch runs and imports.

One row per anonymous user: persona text, trait statements, model, source (demo / batch / import), timestamp,
consent flag, and optionally the SynthesizeMe artifact (JSON) so a persona made in the app links back to the
reasoning and preference pairs behind it. Each write is one transaction: a writer killed at any point leaves either
the whole write or nothing, and committed rows survive (WAL with synchronous=FULL). Connections are opened per
operation, so threads and processes can share one file; SQLite's locking plus a busy timeout serialises writers.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from synth.insights.types import Persona

SOURCES = ("demo", "batch", "import")
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS personas (
    user_id    TEXT PRIMARY KEY,
    persona    TEXT NOT NULL,
    statements TEXT NOT NULL DEFAULT '[]',
    model      TEXT NOT NULL DEFAULT '',
    source     TEXT NOT NULL CHECK (source IN ('demo', 'batch', 'import')),
    created_at TEXT NOT NULL,
    consent    INTEGER NOT NULL CHECK (consent IN (0, 1)),
    artifact   TEXT
)
"""


def new_user_id() -> str:
    """A random anonymous id; it carries nothing about the person."""
    return "u-" + secrets.token_hex(8)


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
    artifact: dict[str, Any] | None = None

    def to_persona(self) -> Persona:
        return Persona(self.user_id, self.persona, self.statements)


class PersonaStore:
    """add / add_many / get / list / delete / count over one SQLite file at `path` (created on first use)."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(_SCHEMA)
            connection.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")

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

    @staticmethod
    def _row(record: PersonaRecord) -> tuple[Any, ...]:
        if record.source not in SOURCES:
            raise ValueError(
                f"source must be one of {', '.join(SOURCES)}, got {record.source!r}"
            )
        if not record.user_id.strip() or not record.persona.strip():
            raise ValueError("user_id and persona must not be empty")
        artifact = (
            None
            if record.artifact is None
            else json.dumps(record.artifact, ensure_ascii=False)
        )
        return (
            record.user_id,
            record.persona,
            json.dumps(list(record.statements), ensure_ascii=False),
            record.model,
            record.source,
            record.created_at,
            int(bool(record.consent)),
            artifact,
        )

    def add(self, record: PersonaRecord) -> None:
        """Insert, or replace the row of the same user (a user's newest persona supersedes the old one)."""
        self.add_many([record])

    def add_many(self, records: Iterable[PersonaRecord]) -> int:
        """Write all records in one transaction (all or nothing); returns how many were written."""
        rows = [self._row(record) for record in records]
        with self._connection() as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(
                    "INSERT INTO personas (user_id, persona, statements, model, source, created_at, consent, artifact)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(user_id) DO UPDATE SET persona=excluded.persona, statements=excluded.statements,"
                    " model=excluded.model, source=excluded.source, created_at=excluded.created_at,"
                    " consent=excluded.consent, artifact=excluded.artifact",
                    rows,
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        return len(rows)

    def get(self, user_id: str) -> PersonaRecord | None:
        with self._connection() as connection:
            row = connection.execute(
                "SELECT user_id, persona, statements, model, source, created_at, consent, artifact"
                " FROM personas WHERE user_id = ?",
                (user_id,),
            ).fetchone()
        return None if row is None else _record(row)

    def list(
        self,
        consented_only: bool = False,
        sources: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[PersonaRecord]:
        """Records oldest first; the insights tab lists only consented personas."""
        query = "SELECT user_id, persona, statements, model, source, created_at, consent, artifact FROM personas"
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

    def delete(self, user_id: str) -> bool:
        """Remove a user's persona; True if there was one."""
        with self._connection() as connection:
            return (
                connection.execute(
                    "DELETE FROM personas WHERE user_id = ?", (user_id,)
                ).rowcount
                > 0
            )

    def count(self, consented_only: bool = False) -> int:
        query = "SELECT COUNT(*) FROM personas" + (
            " WHERE consent = 1" if consented_only else ""
        )
        with self._connection() as connection:
            return int(connection.execute(query).fetchone()[0])


def _record(row: tuple[Any, ...]) -> PersonaRecord:
    user_id, persona, statements, model, source, created_at, consent, artifact = row
    return PersonaRecord(
        user_id=user_id,
        persona=persona,
        source=source,
        consent=bool(consent),
        statements=tuple(json.loads(statements)),
        model=model,
        created_at=created_at,
        artifact=None if artifact is None else json.loads(artifact),
    )
