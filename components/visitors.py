"""The studio's live visitors: their cancel flags by session id, and a folder for the files made for each.

A visitor's model work stops when they cancel or leave (Gradio's ``unload`` names the leaving page by its session
hash), and the files made for them (artifact, exported labels) are removed with their folder then, or when their
session state expires.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

from components.labeling import LabelSession


class Visitors:
    """Sessions by Gradio session hash and by their own id; one folder per session under ``root``."""

    def __init__(self, root: Path | None = None):
        self.root = root or Path(tempfile.mkdtemp(prefix="synth-studio-"))
        self._by_hash: dict[str, LabelSession] = {}
        self._by_id: dict[str, LabelSession] = {}
        self._lock = threading.Lock()

    def join(self, session: LabelSession, session_hash: str | None) -> None:
        with self._lock:
            self._by_id[session.id] = session
            if session_hash:
                previous = self._by_hash.get(session_hash)
                self._by_hash[session_hash] = session
        if session_hash and previous is not None and previous is not session:
            self.forget(previous)  # the same page started over (e.g. the load event ran again)

    def cancel_flag(self, session_id: str) -> threading.Event:
        """The visitor's cancel flag; a fresh, never-set one for an id this process does not know (a forked
        device worker knows only the visitors of the moment it was forked)."""
        with self._lock:
            session = self._by_id.get(session_id)
        return session.cancel if session is not None else threading.Event()

    def folder(self, session: LabelSession) -> Path:
        """A folder for the files made for this visitor (removed when they leave)."""
        path = self.root / session.id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def leave(self, session_hash: str) -> None:
        """The page closed: stop the visitor's model work and remove their files."""
        with self._lock:
            session = self._by_hash.pop(session_hash, None)
        if session is not None:
            self.forget(session)

    def forget(self, session: LabelSession | None) -> None:
        """Stop the session's work and remove its files (also the state's delete callback)."""
        if not isinstance(session, LabelSession):
            return
        session.cancel.set()
        with self._lock:
            self._by_id.pop(session.id, None)
        shutil.rmtree(self.root / session.id, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
