"""The core's own state (registry, sessions, incidents, operators, evidence …) on one database:
a SQLite file for a pilot, PostgreSQL shared by several core replicas.

Stores write their SQL once, with ``?`` placeholders, in what both engines understand (``ON
CONFLICT … DO UPDATE``/``DO NOTHING``, ``COALESCE``, ``CASE``); where they differ a store asks
``db.dialect`` (``db.greatest`` for SQLite's two-argument ``MAX``). Each store's SQLite schema
stays beside its code (``db.schema(SCHEMA)``); PostgreSQL's is ``migrations/``, applied once
when the database is opened, so the two are kept in step by a test.

``execute`` runs one statement on its own (its own transaction on PostgreSQL); inside ``with
db.transaction():`` every statement of that thread runs in one write transaction, and inside
``with db.reading():`` in one consistent read. Driver errors become ``DatabaseError`` (a unique
or foreign key broken: ``IntegrityError``) here, so no store imports a driver.

    Database ─┬─ SqliteDatabase    one connection, one thread at a time (a lock)
              └─ PostgresDatabase  a connection pool; a transaction pins one to its thread
"""

from __future__ import annotations

import abc
import contextlib
import functools
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

from cloud_core.exceptions import CoreError, DatabaseUnavailable, StorageError
from cloud_core.storage.base import Location, is_postgres
from runtime.private_files import make_private

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

Params = Sequence[Any]
Dialect = Literal["sqlite", "postgres"]
POOL_SIZE: Final = 8  # the loop, the ingest's writer, the console's and metrics' readers …


class DatabaseError(CoreError):
    """A statement failed (``what`` is the engine's message, never a parameter)."""


class IntegrityError(DatabaseError):
    """A unique, primary or foreign key would be broken: nothing was written."""


class Result:
    """The rows of one statement, read in full (a cursor must not outlive its connection)."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class Database(abc.ABC):
    """One database of the core's state; thread-safe."""

    dialect: ClassVar[Dialect]

    @abc.abstractmethod
    def execute(self, sql: str, params: Params = ()) -> Result:
        """Run one statement (``?`` placeholders) and read its rows."""

    @abc.abstractmethod
    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        """Run one statement for each of ``rows``; return how many rows it changed in all."""

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction for this thread's statements; nested: the outer one."""

    @abc.abstractmethod
    def reading(self) -> contextlib.AbstractContextManager[None]:
        """One consistent read for this thread's statements (a snapshot on both engines)."""

    @abc.abstractmethod
    def schema(self, sqlite_script: str) -> None:
        """Create a store's tables: ``sqlite_script`` on SQLite; on PostgreSQL the migrations
        did it already."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection; idempotent."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where it is, fit for a log line (no password)."""

    def scalar(self, sql: str, params: Params = ()) -> Any:
        """The first column of the one row ``sql`` reads (``DatabaseError`` if it reads none)."""
        row = self.execute(sql, params).fetchone()
        if row is None:
            raise DatabaseError(f"no row for {sql.split()[0]} … {sql.split()[-1]}")
        return row[0]

    def greatest(self, a: str, b: str) -> str:
        """SQL for the larger of two expressions."""
        return f"MAX({a}, {b})" if self.dialect == "sqlite" else f"GREATEST({a}, {b})"


def open_database(location: Location) -> Database:
    """The database at ``location``: a SQLite path (created 0600) or a ``postgresql://`` URL
    (migrated to this core's schema; ``SchemaTooNew`` when the database is newer)."""
    if is_postgres(location):
        return PostgresDatabase.open(str(location))
    return SqliteDatabase(Path(location))


# --- SQLite -----------------------------------------------------------------------------------

class SqliteDatabase(Database):
    """A SQLite file in WAL mode; one connection, its statements serialised by a lock that a
    transaction or read holds throughout (so no other thread's statement falls inside it).
    Another connection to the same file (``SqliteDatabase(path)``) reads while this one writes."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            if str(path) != ":memory:":
                make_private(path)
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(str(path), f"cannot open: {exc}") from exc
        self._lock = threading.RLock()
        self._depth = 0  # open transactions or reads of the thread holding the lock

    @property
    def location(self) -> str:
        return str(self.path)

    @property
    def connection(self) -> sqlite3.Connection:
        """The connection itself, for code that is SQLite's only (an R*Tree, a PRAGMA)."""
        if self._conn is None:
            raise DatabaseError(f"{self.path} is closed")
        return self._conn

    def execute(self, sql: str, params: Params = ()) -> Result:
        with self._lock, _sqlite_errors():
            cursor = self.connection.execute(sql, params)
            return Result(cursor.fetchall(), cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        with self._lock, _sqlite_errors():
            return max(self.connection.executemany(sql, rows).rowcount, 0)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._outermost("BEGIN IMMEDIATE") as outer:
            if not outer:
                yield
                return
            try:
                yield
            except BaseException:
                self._end("ROLLBACK")
                raise
            try:
                self._end("COMMIT")
            except DatabaseError:
                self._end("ROLLBACK")
                raise

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._outermost("BEGIN") as outer:
            try:
                yield
            finally:
                if outer:
                    self._end("COMMIT")

    @contextlib.contextmanager
    def _outermost(self, begin: str) -> Iterator[bool]:
        with self._lock:
            outer = self._depth == 0
            if outer:
                with _sqlite_errors():
                    self.connection.execute(begin)
            self._depth += 1
            try:
                yield outer
            finally:
                self._depth -= 1

    def _end(self, statement: str) -> None:
        with _sqlite_errors():
            self.connection.execute(statement)

    def schema(self, sqlite_script: str) -> None:
        with self._lock, _sqlite_errors():
            self.connection.executescript(sqlite_script)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


@contextlib.contextmanager
def _sqlite_errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(str(exc)) from exc
    except sqlite3.Error as exc:
        raise DatabaseError(str(exc)) from exc


# --- PostgreSQL -------------------------------------------------------------------------------

class PostgresDatabase(Database):
    """A pool of connections to one PostgreSQL database, shared by every thread of this core
    (and, through the database, with every other replica). Outside a transaction each statement
    takes a pooled connection in autocommit mode; a transaction or read keeps one for its
    thread until it ends."""

    dialect = "postgres"

    def __init__(self, pool: ConnectionPool[Any], database: str) -> None:
        self._pool = pool
        self._database = database
        self._pinned = threading.local()

    @classmethod
    def open(cls, dsn: str) -> PostgresDatabase:
        """Connect (``DatabaseUnavailable`` within the timeout), migrate, open the pool."""
        from psycopg_pool import ConnectionPool, PoolTimeout

        from cloud_core.storage.dsn import CONNECT_TIMEOUT_S, connect, connection_kwargs, redact
        from cloud_core.storage.migrations import migrate

        database = redact(dsn)
        with connect(dsn, autocommit=True) as conn:
            migrate(conn, database)
        # No check when a connection is handed out: it cost a round trip per statement (a
        # quarter of the loop's time per session). A connection the server dropped fails its
        # next statement once (``DatabaseError``) and the pool, seeing it broken, replaces it.
        pool: ConnectionPool[Any] = ConnectionPool(
            "", kwargs=connection_kwargs(dsn, autocommit=True), min_size=2, max_size=POOL_SIZE,
            open=False, name="core", timeout=CONNECT_TIMEOUT_S)
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:
            pool.close()
            raise DatabaseUnavailable(database, f"no connection within {CONNECT_TIMEOUT_S} s") \
                from exc
        return cls(pool, database)

    @property
    def location(self) -> str:
        return self._database

    def execute(self, sql: str, params: Params = ()) -> Result:
        with self._connection() as conn, self._errors(), conn.cursor() as cursor:
            cursor.execute(_postgres_sql(sql), params)
            rows = cursor.fetchall() if cursor.description is not None else []
            return Result(rows, cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Params]) -> int:
        batch = list(rows)
        if not batch:
            return 0
        with self._connection() as conn, self._errors(), conn.cursor() as cursor:
            cursor.executemany(_postgres_sql(sql), batch)
            return max(cursor.rowcount, 0)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._pinned_transaction():
            yield

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        # REPEATABLE READ: every statement of the read sees the same snapshot, as SQLite's does.
        with self._pinned_transaction("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"):
            yield

    @contextlib.contextmanager
    def _pinned_transaction(self, first: str | None = None) -> Iterator[None]:
        pinned: psycopg.Connection[Any] | None = getattr(self._pinned, "conn", None)
        if pinned is not None:  # nested: part of the outer one
            yield
            return
        with self._errors(), self._pool.connection() as conn:
            self._pinned.conn = conn
            try:
                with conn.transaction():
                    if first is not None:
                        conn.execute(first)
                    yield
            finally:
                self._pinned.conn = None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        pinned: psycopg.Connection[Any] | None = getattr(self._pinned, "conn", None)
        if pinned is not None:
            yield pinned
            return
        with self._errors(), self._pool.connection() as conn:
            yield conn

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        import psycopg
        from psycopg_pool import PoolTimeout

        from cloud_core.storage.dsn import first_line

        try:
            yield
        except psycopg.errors.IntegrityError as exc:
            raise IntegrityError(first_line(exc)) from exc
        except psycopg.Error as exc:
            raise DatabaseError(f"{self._database}: {first_line(exc)}") from exc
        except PoolTimeout as exc:
            raise DatabaseError(f"{self._database}: no free connection: {exc}") from exc

    def schema(self, sqlite_script: str) -> None:
        """Nothing: ``migrations/`` made every table when the database was opened."""

    def close(self) -> None:
        self._pool.close()


_PLACEHOLDER_OR_QUOTED: Final = re.compile(r"'(?:[^']|'')*'|\?|%")


@functools.lru_cache(maxsize=1024)
def _postgres_sql(sql: str) -> str:
    """``sql`` with psycopg's placeholders: ``?`` → ``%s`` outside quoted strings, and every
    literal ``%`` → ``%%`` (psycopg reads ``%`` inside quotes too)."""
    def swap(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        return token.replace("%", "%%")
    return _PLACEHOLDER_OR_QUOTED.sub(swap, sql)
