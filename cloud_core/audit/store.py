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

from cloud_core.audit.canonical import iso, parse_time, record_hash
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
    RECORD_COLUMNS,
    SCHEMA,
    payload_from_row,
    record_row,
)
from cloud_core.exceptions import AuditError
from runtime.private_files import make_private

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
            make_private(db_path)
            conn = sqlite3.connect(db_path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
        except (sqlite3.Error, OSError) as exc:
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
            _leave_wal_mode(conn)
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
        """Close the connection, after signing the head unless ``final_checkpoint`` is False.

        When no one else has the file open, it is left in rollback-journal mode with the WAL
        folded in, so the file alone holds every record: a file that still says WAL but has no
        ``-wal`` beside it is then a copy that missed records (``check_wal_present``).
        """
        try:
            if final_checkpoint and self.checkpoint_now() is not None:
                self.flush_wal()
            _leave_wal_mode(self._conn)
        finally:
            self._conn.close()

    def last_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint (to hand to witnesses again at start), or None."""
        row = self._conn.execute(
            "SELECT seq, head_hash, at, key_id, signature FROM audit_checkpoints "
            "ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return Checkpoint(seq=int(row[0]), head_hash=str(row[1]), at=parse_time(str(row[2])),
                          key_id=str(row[3]), signature=str(row[4]))

    def tail_problem(self) -> str | None:
        """What is wrong with the records after the last checkpoint, or None.

        Run at start, before that tail is signed: a record edited while the core was down
        (after a crash, say) must not be attested by the next checkpoint.
        """
        start = self._last_checkpoint_seq()
        self._conn.row_factory = sqlite3.Row
        try:
            rows = self._conn.execute(
                f"SELECT {', '.join(RECORD_COLUMNS)} FROM audit_records WHERE seq >= ? "
                "ORDER BY seq", (max(start, 1),))
            expected_seq, prev_hash = max(start, 1), None
            for row in rows:
                if int(row["seq"]) != expected_seq:
                    return f"record {expected_seq} is missing"
                if prev_hash is not None and row["prev_hash"] != prev_hash:
                    return f"record {expected_seq} does not link to record {expected_seq - 1}"
                if record_hash(payload_from_row(row)) != row["hash"]:
                    return f"record {expected_seq} does not match its hash: edited"
                expected_seq, prev_hash = expected_seq + 1, str(row["hash"])
        except (sqlite3.Error, ValueError) as exc:
            return f"the records after the last checkpoint are unreadable ({exc})"
        finally:
            self._conn.row_factory = None
        return None

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


def _leave_wal_mode(conn: sqlite3.Connection) -> None:
    """Switch to ``journal_mode=DELETE`` if no other connection holds the file; else leave it."""
    try:
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA journal_mode=DELETE").fetchone()
    except sqlite3.OperationalError:
        pass  # another connection (the core, a reader) has it open: the WAL stays beside it


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

_SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def check_wal_present(db_path: Path) -> None:
    """AuditError if ``db_path`` is in WAL mode but its ``-wal`` file is not beside it.

    The core leaves the log out of WAL mode when it stops cleanly, and ``safetynet audit backup``
    writes copies out of WAL mode, so such a file is a plain copy of a live log: records still in
    the ``-wal`` file are missing from it, and nothing inside the copy can tell how many.
    """
    db_path = Path(db_path)
    if not db_path.is_file():
        raise AuditError(f"no audit log at {db_path}")
    try:
        with db_path.open("rb") as handle:
            header = handle.read(20)
    except OSError as exc:
        raise AuditError(f"cannot read {db_path}: {exc}") from exc
    in_wal_mode = header[:16] == _SQLITE_MAGIC and header[18:20] == b"\x02\x02"
    if in_wal_mode and not Path(f"{db_path}-wal").exists():
        raise AuditError(
            f"{db_path} is in WAL mode but its write-ahead log {db_path.name}-wal is not beside "
            "it: this looks like a plain copy of a live log, which misses the records still in "
            "the WAL. Copy the WAL file too, or make a consistent copy with "
            "`safetynet audit backup`")


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
