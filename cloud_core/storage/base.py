"""The storage seam: what the audit log needs of a database, and where a location leads.

A location is a path (SQLite, the zero-install default) or a ``postgresql://`` URL (several core
replicas on one PostgreSQL). ``open_audit_store`` gives the one writing side, ``open_audit_reader``
a read-only view; both backends keep the same tables, columns and text encodings, so a record
hashes the same wherever it is stored. Backends are imported only when used: a SQLite pilot
never loads psycopg.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from cloud_core.audit.checkpoints import Checkpoint, CheckpointSigner
    from cloud_core.audit.records import AuditEntry, AuditRecord

Location = Path | str
Row = Mapping[str, Any]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: Location) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def normalise(location: Location) -> Location:
    """A DSN stays a string; anything else is a file path."""
    return location if is_postgres(location) else Path(location)


def describe(location: Location) -> str:
    """``location`` fit for a log line or an error: a DSN without its password."""
    if not is_postgres(location):
        return str(location)
    from cloud_core.storage.dsn import redact

    return redact(str(location))


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordFilter:
    """Which records a reader yields: every given filter holds; ``since`` inclusive, ``until``
    exclusive on the ISO text ``at``; oldest first unless ``newest_first``."""

    operator_id: str | None = None
    camera_id: str | None = None
    incident_id: str | None = None
    action: str | None = None
    since: str | None = None
    until: str | None = None
    before_seq: int | None = None
    newest_first: bool = False
    limit: int | None = None


class AuditWriteStore(Protocol):
    """The writing side of one audit log. One thread at a time."""

    unattested: bool

    def write(
        self, entries: Sequence[AuditEntry], checkpoint_due: bool
    ) -> tuple[list[AuditRecord], Checkpoint | None]:
        """Append ``entries`` after the current head in one durable transaction."""
        ...

    def checkpoint_now(self) -> Checkpoint | None:
        """Sign the current head if a signer is set and the head is not yet attested."""
        ...

    def flush_wal(self) -> None:
        """Make a plain copy of the storage hold every signed record (a no-op where moot)."""
        ...

    def last_checkpoint(self) -> Checkpoint | None:
        """The newest stored checkpoint, or None."""
        ...

    def tail_problem(self) -> str | None:
        """What is wrong with the records after the last checkpoint (edited, missing), or None."""
        ...

    def close(self, *, final_checkpoint: bool = True) -> None:
        """Close, after signing the head unless ``final_checkpoint`` is False."""
        ...


class AuditReader(Protocol):
    """A read-only, consistent view of one audit log (one read transaction)."""

    expected_guards: tuple[str, ...]

    def meta(self) -> dict[str, str]: ...

    def checkpoints(self) -> list[dict[str, Any]]:
        """Every checkpoint row (id, seq, head_hash, at, key_id, signature) in id order."""
        ...

    def records(self, where: RecordFilter) -> Iterator[Row]:
        """The record rows (``RECORD_COLUMNS``) matching ``where``."""
        ...

    def guards(self) -> set[str]:
        """The names of the append-only guards (triggers) present now."""
        ...


def open_audit_store(
    location: Location,
    signer: CheckpointSigner | None,
    checkpoint_every: int,
    may_checkpoint: Callable[[], bool] | None = None,
) -> AuditWriteStore:
    """The writing side of the log at ``location``; tables are created (or migrated) first.

    ``may_checkpoint`` says whether this process signs checkpoints now (the leader among core
    replicas); a single SQLite process always does.
    """
    if is_postgres(location):
        from cloud_core.storage.postgres import PostgresAuditStore

        return PostgresAuditStore.open(str(location), signer, checkpoint_every, may_checkpoint)
    from cloud_core.audit.store import AuditStore

    return AuditStore.open(Path(location), signer, checkpoint_every)


@contextlib.contextmanager
def open_audit_reader(location: Location) -> Iterator[AuditReader]:
    """A read-only view of the log at ``location``, for one consistent read."""
    if is_postgres(location):
        from cloud_core.storage.postgres import open_postgres_reader

        with open_postgres_reader(str(location)) as pg_reader:
            yield pg_reader
        return
    from cloud_core.storage.sqlite import open_sqlite_reader

    with open_sqlite_reader(Path(location)) as sqlite_reader:
        yield sqlite_reader


def time_bounds(since: datetime | None, until: datetime | None) -> tuple[str | None, str | None]:
    """``since``/``until`` checked and as the ISO text the ``at`` column holds."""
    from cloud_core.audit.canonical import iso
    from cloud_core.audit.records import check_time

    start = check_time("since", since)
    end = check_time("until", until)
    return (None if start is None else iso(start), None if end is None else iso(end))


def filter_clauses(where: RecordFilter, placeholder: str,
                   camera_clause: str) -> tuple[list[str], list[Any]]:
    """SQL conditions and parameters for ``where``; each backend gives its placeholder (``?`` or
    ``%s``) and how it tests that a record names a camera (``camera_clause``, one placeholder)."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (("at", ">=", where.since), ("at", "<", where.until),
                              ("operator_id", "=", where.operator_id),
                              ("incident_id", "=", where.incident_id),
                              ("action", "=", where.action), ("seq", "<", where.before_seq)):
        if value is not None:
            clauses.append(f"{column} {op} {placeholder}")
            params.append(value)
    if where.camera_id is not None:
        clauses.append(camera_clause)
        params.append(where.camera_id)
    return clauses, params
