"""The audit log on SQLite: the zero-install default, one file beside the registry.

The writing side is ``cloud_core.audit.store.AuditStore`` (WAL, ``BEGIN IMMEDIATE``); this
module gives the read-only view behind ``open_audit_reader`` for verification, search and export.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloud_core.audit.schema import RECORD_COLUMNS, TRIGGERS
from cloud_core.audit.store import open_readonly
from cloud_core.storage.base import RecordFilter, Row, filter_clauses


class SqliteAuditReader:
    """Reads one SQLite audit log inside one read transaction."""

    expected_guards = TRIGGERS

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def meta(self) -> dict[str, str]:
        return {row["name"]: row["value"]
                for row in self._conn.execute("SELECT name, value FROM audit_meta")}

    def checkpoints(self) -> list[dict[str, Any]]:
        return [dict(row) for row in self._conn.execute(
            "SELECT id, seq, head_hash, at, key_id, signature FROM audit_checkpoints ORDER BY id")]

    def records(self, where: RecordFilter) -> Iterator[Row]:
        clauses, params = _clauses(where)
        sql = (f"SELECT {', '.join(RECORD_COLUMNS)} FROM audit_records "
               f"{'WHERE ' + ' AND '.join(clauses) if clauses else ''} "
               f"ORDER BY seq {'DESC' if where.newest_first else 'ASC'}")
        if where.limit is not None:
            sql += " LIMIT ?"
            params.append(where.limit)
        for row in self._conn.execute(sql, params):
            yield dict(row)

    def guards(self) -> set[str]:
        return {row[0] for row in
                self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}


def _clauses(where: RecordFilter) -> tuple[list[str], list[Any]]:
    return filter_clauses(where, "?", "EXISTS (SELECT 1 FROM json_each(audit_records.camera_ids) WHERE value = ?)")


@contextlib.contextmanager
def open_sqlite_reader(db_path: Path) -> Iterator[SqliteAuditReader]:
    """``open_readonly`` (AuditError when it is no audit log) as an ``AuditReader``."""
    with open_readonly(db_path) as conn:
        yield SqliteAuditReader(conn)
