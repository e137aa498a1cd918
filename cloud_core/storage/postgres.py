"""The audit log on PostgreSQL: one chain, appended by any number of core replicas.

Each append transaction first takes ``pg_advisory_xact_lock(CHAIN_LOCK)``, then reads the head
(READ COMMITTED: the read after the lock sees every earlier commit), so appends from every
replica form one ordered chain and never fork; the lock is released at COMMIT or ROLLBACK, also
when a replica dies mid-transaction. Checkpoints are written under the same lock. The schema is
``migrations/``; connections come from a psycopg-pool pool that replaces broken ones. Every
``psycopg.Error`` becomes an ``AuditError`` (or a ``StorageError`` at start-up) here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from cloud_core.audit.canonical import iso, parse_time, record_hash
from cloud_core.audit.checkpoints import Checkpoint, CheckpointSigner, raw_public_key
from cloud_core.audit.records import GENESIS_HASH, AuditEntry, AuditRecord, record_payload
from cloud_core.audit.schema import LOG_FORMAT, RECORD_COLUMNS, payload_from_row, record_row
from cloud_core.exceptions import AuditError, DatabaseUnavailable, StorageError
from cloud_core.storage.base import RecordFilter, Row, filter_clauses
from cloud_core.storage.dsn import CONNECT_TIMEOUT_S, connect, connection_kwargs, redact
from cloud_core.storage.migrations import check_not_newer, migrate

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

CHAIN_LOCK: Final = 0x5AFE0A0D1700  # also in migrations/0001_audit_log.sql
GUARDS: Final = (
    "audit_records_extend_head",
    *(f"{table}_no_{what}" for table in ("audit_records", "audit_checkpoints", "audit_meta")
      for what in ("change", "truncate")),
)
INSERT_RECORD: Final = (
    f"INSERT INTO audit_records ({', '.join(RECORD_COLUMNS)}) "
    f"VALUES ({', '.join('%s' for _ in RECORD_COLUMNS)})"
)
INSERT_CHECKPOINT: Final = (
    "INSERT INTO audit_checkpoints (seq, head_hash, at, key_id, signature) "
    "VALUES (%s, %s, %s, %s, %s)"
)


@contextlib.contextmanager
def _audit_errors(what: str) -> Iterator[None]:
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (psycopg.Error, PoolTimeout) as exc:
        raise AuditError(f"{what}: {exc}") from exc


class PostgresAuditStore:
    """The writing side on PostgreSQL; one thread at a time (the ``AuditLog`` writer's)."""

    def __init__(self, pool: ConnectionPool[Any], signer: CheckpointSigner | None,
                 checkpoint_every: int, may_checkpoint: Callable[[], bool] | None) -> None:
        self._pool = pool
        self._signer = signer
        self._checkpoint_every = checkpoint_every
        self._may_checkpoint = may_checkpoint or (lambda: True)
        with self._pool.connection() as conn, _audit_errors("cannot read the audit head"):
            head_seq, _ = _head(conn)
            self.unattested = head_seq > _last_checkpoint_seq(conn)

    @classmethod
    def open(cls, dsn: str, signer: CheckpointSigner | None, checkpoint_every: int,
             may_checkpoint: Callable[[], bool] | None = None) -> PostgresAuditStore:
        """Connect (``DatabaseUnavailable`` within the timeout), migrate, check format and key."""
        import psycopg
        from psycopg_pool import ConnectionPool, PoolTimeout

        database = redact(dsn)
        with connect(dsn, autocommit=True) as conn:
            migrate(conn, database)
            try:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
                    _check_meta(conn, signer)
            except psycopg.Error as exc:
                raise StorageError(database, f"cannot open the audit log: {exc}") from exc
        pool: ConnectionPool[Any] = ConnectionPool(
            "", kwargs=connection_kwargs(dsn, autocommit=True), min_size=1, max_size=2,
            open=False, check=ConnectionPool.check_connection, name="audit",
            timeout=CONNECT_TIMEOUT_S)
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            return cls(pool, signer, checkpoint_every, may_checkpoint)
        except PoolTimeout as exc:
            pool.close()
            raise DatabaseUnavailable(database, "no connection within "
                                      f"{CONNECT_TIMEOUT_S} s") from exc
        except BaseException:
            pool.close()
            raise

    def write(
        self, entries: Sequence[AuditEntry], checkpoint_due: bool
    ) -> tuple[list[AuditRecord], Checkpoint | None]:
        """Append ``entries`` after the chain's head, whoever wrote it, in one transaction."""
        records: list[AuditRecord] = []
        rows: list[tuple[Any, ...]] = []
        with (_audit_errors("cannot append to the audit log"), self._pool.connection() as conn,
              conn.transaction()):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
            now = datetime.now(UTC)
            seq, prev_hash = _head(conn)
            for entry in entries:
                seq += 1
                payload = record_payload(seq, now, prev_hash, entry)
                hashed = record_hash(payload)
                rows.append(record_row(payload, hashed))
                records.append(
                    AuditRecord(seq=seq, at=now, prev_hash=prev_hash, hash=hashed, entry=entry))
                prev_hash = hashed
            with conn.cursor() as cursor:
                cursor.executemany(INSERT_RECORD, rows)
            checkpoint = self._checkpoint_locked(conn, seq, prev_hash, now, force=checkpoint_due)
        return records, checkpoint

    def checkpoint_now(self) -> Checkpoint | None:
        """Sign the chain's head (whoever wrote it) unless it is attested or we may not sign."""
        if self._signer is None or not self._may_checkpoint():
            return None
        with (_audit_errors("cannot write an audit checkpoint"),
              self._pool.connection() as conn, conn.transaction()):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CHAIN_LOCK,))
            seq, head_hash = _head(conn)
            return self._checkpoint_locked(conn, seq, head_hash, datetime.now(UTC), force=True)

    def flush_wal(self) -> None:
        """Nothing to do: PostgreSQL's WAL is its own business."""

    def last_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint (to hand to witnesses again at start), or None."""
        with _audit_errors("cannot read the last checkpoint"), self._pool.connection() as conn:
            row = conn.execute("SELECT seq, head_hash, at, key_id, signature FROM "
                               "audit_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return Checkpoint(seq=int(row[0]), head_hash=str(row[1]), at=parse_time(str(row[2])),
                          key_id=str(row[3]), signature=str(row[4]))

    def tail_problem(self) -> str | None:
        """What is wrong with the records after the last checkpoint, or None (see SQLite's)."""
        from psycopg.rows import dict_row

        with (_audit_errors("cannot read the unsigned tail"), self._pool.connection() as conn,
              conn.cursor(row_factory=dict_row) as cursor):
            start = max(_last_checkpoint_seq(conn), 1)
            cursor.execute(f"SELECT {', '.join(RECORD_COLUMNS)} FROM audit_records "
                           "WHERE seq >= %s ORDER BY seq", (start,))
            expected, prev_hash = start, None
            for row in cursor:
                if int(row["seq"]) != expected:
                    return f"record {expected} is missing"
                if prev_hash is not None and row["prev_hash"] != prev_hash:
                    return f"record {expected} does not link to record {expected - 1}"
                if record_hash(payload_from_row(row)) != row["hash"]:
                    return f"record {expected} does not match its hash: edited"
                expected, prev_hash = expected + 1, str(row["hash"])
        return None

    def close(self, *, final_checkpoint: bool = True) -> None:
        try:
            if final_checkpoint:
                self.checkpoint_now()
        finally:
            self._pool.close()

    def _checkpoint_locked(self, conn: psycopg.Connection[Any], head_seq: int, head_hash: str,
                           now: datetime, *, force: bool) -> Checkpoint | None:
        if self._signer is None or not self._may_checkpoint():
            return None
        last_seq = _last_checkpoint_seq(conn)
        if head_seq <= last_seq or (not force and head_seq - last_seq < self._checkpoint_every):
            return None
        checkpoint = self._signer.sign(head_seq, head_hash, now)
        conn.execute(INSERT_CHECKPOINT, (checkpoint.seq, checkpoint.head_hash, iso(checkpoint.at),
                                         checkpoint.key_id, checkpoint.signature))
        return checkpoint


def _head(conn: psycopg.Connection[Any]) -> tuple[int, str]:
    row = conn.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (int(row[0]), str(row[1]))


def _last_checkpoint_seq(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT seq FROM audit_checkpoints ORDER BY id DESC LIMIT 1").fetchone()
    return 0 if row is None else int(row[0])


def _check_meta(conn: psycopg.Connection[Any], signer: CheckpointSigner | None) -> None:
    meta = {str(name): str(value) for name, value in
            conn.execute("SELECT name, value FROM audit_meta").fetchall()}
    if "format" not in meta:
        conn.execute("INSERT INTO audit_meta (name, value) VALUES ('format', %s)", (LOG_FORMAT,))
    elif meta["format"] != LOG_FORMAT:
        raise AuditError(f"unsupported audit log format {meta['format']!r}")
    if signer is None:
        return
    public_key_hex = raw_public_key(signer.public_key).hex()
    stored = meta.get("public_key")
    if stored is None:
        with conn.cursor() as cursor:
            cursor.executemany("INSERT INTO audit_meta (name, value) VALUES (%s, %s)",
                               [("public_key", public_key_hex), ("key_id", signer.key_id)])
    elif stored != public_key_hex:
        raise AuditError(
            f"the audit log's checkpoints are signed by key {meta.get('key_id')!r}, "
            f"not by the configured key {signer.key_id!r}")


# Reading ----------------------------------------------------------------------------------------


class PostgresAuditReader:
    """Reads one PostgreSQL audit log in one REPEATABLE READ, READ ONLY transaction."""

    expected_guards = GUARDS

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def meta(self) -> dict[str, str]:
        rows = self._conn.execute("SELECT name, value FROM audit_meta").fetchall()
        return {str(name): str(value) for name, value in rows}

    def checkpoints(self) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self._conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute("SELECT id, seq, head_hash, at, key_id, signature "
                           "FROM audit_checkpoints ORDER BY id")
            return cursor.fetchall()

    def records(self, where: RecordFilter) -> Iterator[Row]:
        from psycopg.rows import dict_row

        clauses, params = _clauses(where)
        sql = (f"SELECT {', '.join(RECORD_COLUMNS)} FROM audit_records "
               f"{'WHERE ' + ' AND '.join(clauses) if clauses else ''} "
               f"ORDER BY seq {'DESC' if where.newest_first else 'ASC'}")
        if where.limit is not None:
            sql += " LIMIT %s"
            params.append(where.limit)
        with self._conn.cursor("audit_records_scan", row_factory=dict_row) as cursor:
            cursor.itersize = 2000
            cursor.execute(sql.encode(), params)
            yield from cursor

    def guards(self) -> set[str]:
        rows = self._conn.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled <> 'D' AND "
            "tgrelid IN ('audit_records'::regclass, 'audit_checkpoints'::regclass, "
            "'audit_meta'::regclass)").fetchall()
        return {str(row[0]) for row in rows}


def _clauses(where: RecordFilter) -> tuple[list[str], list[Any]]:
    return filter_clauses(where, "%s", "camera_ids::jsonb ? %s")


@contextlib.contextmanager
def open_postgres_reader(dsn: str) -> Iterator[PostgresAuditReader]:
    """A consistent read-only view (``AuditError`` when the database holds no audit log)."""
    import psycopg

    database = redact(dsn)
    with connect(dsn, autocommit=True) as conn:
        check_not_newer(conn, database)
        try:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            missing = [table for table in ("audit_records", "audit_checkpoints", "audit_meta")
                       if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)]
            if missing:
                raise AuditError(f"{database} holds no audit log (missing {', '.join(missing)})")
            yield PostgresAuditReader(conn)
        except psycopg.Error as exc:
            raise AuditError(f"cannot read the audit log at {database}: {exc}") from exc
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
