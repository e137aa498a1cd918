"""The audit log's SQLite file: the one writing connection, and read-only ones for readers.

Writes are durable before the caller proceeds (WAL, ``synchronous=FULL``). Sequence numbers and
``prev_hash`` are read from the table inside the write transaction, so another writer
(``append_sync`` from a CLI while the core runs) never forks the chain. Every ``sqlite3.Error``
becomes an ``AuditError`` here, at the boundary.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cloud_core.audit.canonical import iso, record_hash
from cloud_core.audit.checkpoints import Checkpoint, CheckpointSigner, raw_public_key
from cloud_core.audit.records import (
    GENESIS_HASH,
    AuditEntry,
    AuditRecord,
    check_time,
    record_payload,
)
from cloud_core.audit.schema import (
    INSERT_CHECKPOINT,
    INSERT_RECORD,
    LOG_FORMAT,
    SCHEMA,
    record_row,
)
from cloud_core.exceptions import AuditError

BUSY_TIMEOUT_S: Final = 10.0


class AuditStore:
    """The writing connection: schema, chained inserts, checkpoints. One thread at a time."""

    def __init__(
        self, conn: sqlite3.Connection, signer: CheckpointSigner | None, checkpoint_every: int
    ) -> None:
        self._conn = conn
        self._signer = signer
        self._checkpoint_every = checkpoint_every
        head_seq, _ = self._head()
        self.unattested = head_seq > self._last_checkpoint_seq()

    @classmethod
    def open(
        cls, db_path: Path, signer: CheckpointSigner | None, checkpoint_every: int
    ) -> AuditStore:
        """Connect to ``db_path`` in WAL mode, create the tables, check the format and key."""
        try:
            conn = sqlite3.connect(db_path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise AuditError(f"cannot open the audit log at {db_path}: {exc}") from exc
        try:
            mode = _switch_to_wal(conn)
            if mode != "wal":
                raise AuditError(f"{db_path}: cannot switch to WAL (journal mode is {mode})")
            conn.execute("PRAGMA synchronous=FULL")
            with _immediate(conn, f"cannot create the audit tables in {db_path}"):
                for statement in SCHEMA:
                    conn.execute(statement)
                _check_meta(conn, signer)
            return cls(conn, signer, checkpoint_every)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise AuditError(f"cannot open the audit log at {db_path}: {exc}") from exc
            raise

    def write(
        self, entries: Sequence[AuditEntry], checkpoint_due: bool
    ) -> tuple[list[AuditRecord], Checkpoint | None]:
        """Append ``entries`` after the current head in one durable transaction."""
        now = datetime.now(UTC)
        records: list[AuditRecord] = []
        rows: list[tuple[Any, ...]] = []
        with _immediate(self._conn, "cannot append to the audit log"):
            seq, prev_hash = self._head()
            for entry in entries:
                seq += 1
                payload = record_payload(seq, now, prev_hash, entry)
                hashed = record_hash(payload)
                rows.append(record_row(payload, hashed))
                records.append(
                    AuditRecord(seq=seq, at=now, prev_hash=prev_hash, hash=hashed, entry=entry)
                )
                prev_hash = hashed
            self._conn.executemany(INSERT_RECORD, rows)
            checkpoint = self._checkpoint_locked(seq, prev_hash, now, force=checkpoint_due)
        return records, checkpoint

    def checkpoint_now(self) -> Checkpoint | None:
        """Sign the current head if a signer is set and the head is not yet attested."""
        if self._signer is None:
            return None
        with _immediate(self._conn, "cannot write an audit checkpoint"):
            seq, head_hash = self._head()
            return self._checkpoint_locked(seq, head_hash, datetime.now(UTC), force=True)

    def flush_wal(self) -> None:
        """Copy the WAL into the main file so that a plain copy of it holds every signed record.

        PASSIVE: it never waits for readers, so it may copy only part; SQLite's own automatic
        checkpoints and the close of the last connection do the rest.
        """
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            raise AuditError(f"cannot checkpoint the WAL: {exc}") from exc

    def close(self, *, final_checkpoint: bool = True) -> None:
        """Close the connection, after signing the head unless ``final_checkpoint`` is False."""
        try:
            if final_checkpoint and self.checkpoint_now() is not None:
                self.flush_wal()
        finally:
            self._conn.close()

    def _head(self) -> tuple[int, str]:
        row = self._conn.execute(
            "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))

    def _last_checkpoint_seq(self) -> int:
        row = self._conn.execute(
            "SELECT seq FROM audit_checkpoints ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _checkpoint_locked(
        self, head_seq: int, head_hash: str, now: datetime, *, force: bool
    ) -> Checkpoint | None:
        if self._signer is None:
            return None
        last_seq = self._last_checkpoint_seq()
        if head_seq <= last_seq or (not force and head_seq - last_seq < self._checkpoint_every):
            return None
        checkpoint = self._signer.sign(head_seq, head_hash, now)
        self._conn.execute(
            INSERT_CHECKPOINT,
            (checkpoint.seq, checkpoint.head_hash, iso(checkpoint.at), checkpoint.key_id,
             checkpoint.signature),
        )
        return checkpoint


def _switch_to_wal(conn: sqlite3.Connection) -> str:
    """``PRAGMA journal_mode=WAL``, retried briefly: when several writers create the file at once,
    SQLite can answer 'database is locked' to the switch without waiting in its busy handler."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode=WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection, what: str) -> Iterator[None]:
    """BEGIN IMMEDIATE … COMMIT; ROLLBACK on any error; sqlite3 errors become AuditError."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            conn.execute("COMMIT")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise AuditError(f"{what}: {exc}") from exc


def _check_meta(conn: sqlite3.Connection, signer: CheckpointSigner | None) -> None:
    meta = dict(conn.execute("SELECT name, value FROM audit_meta").fetchall())
    if "format" not in meta:
        conn.execute("INSERT INTO audit_meta (name, value) VALUES ('format', ?)", (LOG_FORMAT,))
    elif meta["format"] != LOG_FORMAT:
        raise AuditError(f"unsupported audit log format {meta['format']!r}")
    if signer is None:
        return
    public_key_hex = raw_public_key(signer.public_key).hex()
    stored = meta.get("public_key")
    if stored is None:
        conn.executemany(
            "INSERT INTO audit_meta (name, value) VALUES (?, ?)",
            [("public_key", public_key_hex), ("key_id", signer.key_id)],
        )
    elif stored != public_key_hex:
        raise AuditError(
            f"the audit log's checkpoints are signed by key {meta.get('key_id')!r}, "
            f"not by the configured key {signer.key_id!r}"
        )


# Reading ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_readonly(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection that never writes ``db_path``, in one read transaction.

    A copy of the file without its ``-wal`` holds everything up to the last WAL checkpoint
    (the log runs one after each signed checkpoint). If SQLite cannot open it read-only (say, on
    read-only media where it cannot create the ``-shm`` file) and no ``-wal`` exists, it is
    opened as immutable.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise AuditError(f"no audit log at {db_path}")
    uri = f"{db_path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        try:
            conn.execute("BEGIN")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.OperationalError:
            if Path(f"{db_path}-wal").exists():
                raise
            conn.close()
            conn = sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None)
            conn.execute("BEGIN")
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        missing = {"audit_records", "audit_checkpoints", "audit_meta"} - tables
        if missing:
            raise AuditError(f"{db_path} holds no audit log (missing {', '.join(sorted(missing))})")
        conn.row_factory = sqlite3.Row
        yield conn
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read the audit log at {db_path}: {exc}") from exc
    finally:
        conn.close()


def time_clauses(since: datetime | None, until: datetime | None) -> tuple[list[str], list[Any]]:
    """SQL conditions and parameters for records written in [``since``, ``until``)."""
    clauses: list[str] = []
    params: list[Any] = []
    start = check_time("since", since)
    end = check_time("until", until)
    if start is not None:
        clauses.append("at >= ?")
        params.append(iso(start))
    if end is not None:
        clauses.append("at < ?")
        params.append(iso(end))
    return clauses, params
