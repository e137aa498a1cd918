"""The agent's local journal: every local-mode decision and view, hash-chained, kept until the
core has it on its audit chain (docs/local-mode.md).

One SQLite file (0600, WAL, ``synchronous=FULL``: an entry is on disk before the decision it
records takes effect). The core pulls entries after the last one it holds
(``JournalFetch.after_seq``); asking after N confirms 1..N, which the agent keeps as
``confirmed_seq`` (entries are kept after that too: the journal is the district's own register).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from edge_agent.exceptions import JournalError
from runtime.journal_chain import GENESIS, JournalRecord

log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, district_id TEXT NOT NULL, action TEXT NOT NULL,
    operator_id TEXT NOT NULL, camera_id TEXT NOT NULL, session_id TEXT NOT NULL,
    outcome TEXT NOT NULL, reason TEXT NOT NULL, details TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_COLUMNS = ("seq", "at", "district_id", "action", "operator_id", "camera_id", "session_id",
            "outcome", "reason", "details", "prev_hash", "hash")
MAX_BATCH = 200


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class LocalJournal:
    """Append-only, hash-chained; ``append`` is synchronous (a local decision waits for the disk)."""

    def __init__(self, path: Path, district_id: str) -> None:
        self.path = path
        self.district_id = district_id
        self._changed = asyncio.Condition()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
            os.chmod(path, 0o600)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(str(path), str(exc)) from exc
        for suffix in ("-wal", "-shm"):  # SQLite creates them with the umask: keep them private
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.chmod(side, 0o600)
        self.head_seq, self._head_hash = self._head()

    def _head(self) -> tuple[int, str]:
        row = self._db.execute("SELECT seq, hash FROM journal ORDER BY seq DESC LIMIT 1").fetchone()
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    @property
    def confirmed_seq(self) -> int:
        row = self._db.execute("SELECT value FROM journal_meta WHERE key = 'confirmed_seq'").fetchone()
        return int(row[0]) if row else 0

    def append(self, action: str, operator_id: str, *, camera_id: str = "", session_id: str = "",
               outcome: str = "ok", reason: str = "", details: dict[str, Any] | None = None,
               ) -> JournalRecord:
        """Chain and store one entry; JournalError if it cannot be stored (the caller refuses)."""
        record = JournalRecord(
            seq=self.head_seq + 1, at=_now(), district_id=self.district_id, action=action,
            operator_id=operator_id, camera_id=camera_id, session_id=session_id,
            outcome=outcome, reason=reason, details=dict(details or {}),
            prev_hash=self._head_hash).sealed()
        values = (record.seq, record.at, record.district_id, record.action, record.operator_id,
                  record.camera_id, record.session_id, record.outcome, record.reason,
                  json.dumps(record.details, sort_keys=True), record.prev_hash, record.hash)
        try:
            self._db.execute(f"INSERT INTO journal ({', '.join(_COLUMNS)}) VALUES "
                             f"({', '.join('?' * len(_COLUMNS))})", values)
        except sqlite3.Error as exc:
            raise JournalError(str(self.path), f"cannot append: {exc}") from exc
        self.head_seq, self._head_hash = record.seq, record.hash
        log.info("local journal entry", district=self.district_id, seq=record.seq,
                 action=action, operator=operator_id, camera=camera_id, outcome=outcome)
        return record

    def after(self, seq: int, limit: int = MAX_BATCH) -> list[JournalRecord]:
        """Entries after ``seq``, in order, at most ``limit`` (and ``MAX_BATCH``)."""
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM journal WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, max(1, min(limit or MAX_BATCH, MAX_BATCH)))).fetchall()
        return [JournalRecord(seq=r[0], at=r[1], district_id=r[2], action=r[3], operator_id=r[4],
                              camera_id=r[5], session_id=r[6], outcome=r[7], reason=r[8],
                              details=json.loads(r[9]), prev_hash=r[10], hash=r[11]) for r in rows]

    async def confirm(self, seq: int) -> None:
        """The core holds entries 1..``seq`` (never beyond our head, never backwards)."""
        seq = min(seq, self.head_seq)
        if seq <= self.confirmed_seq:
            return
        self._db.execute("INSERT INTO journal_meta (key, value) VALUES ('confirmed_seq', ?) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (seq,))
        log.info("local journal confirmed by core", district=self.district_id, seq=seq)
        async with self._changed:
            self._changed.notify_all()

    async def wait_confirmed(self, seq: int, timeout: float) -> None:
        """Wait until the core has confirmed entries through ``seq``."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.confirmed_seq >= seq)

    def close(self) -> None:
        self._db.close()
