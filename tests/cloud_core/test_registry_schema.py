"""The registry's two schemas cannot drift: the tables that ``Registry`` (and ``RelayDesk``)
create on SQLite have the same columns, types, nullability and defaults as migration 0003 makes on
PostgreSQL, and the same indexes (PostgreSQL's btree on position stands in for the R*Tree)."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from cloud_core.registry import Registry
from cloud_core.relays import SCHEMA as RELAY_SCHEMA
from cloud_core.storage.database import SqliteDatabase

TABLES = ("districts", "cameras", "registry_meta", "sessions", "incident_relays")
#: SQLite's declared type -> what PostgreSQL's migration must use for it.
TYPES = {"TEXT": "text", "INTEGER": "bigint", "REAL": "double precision"}
#: PostgreSQL's stand-in for the R*Tree (SQLite-only) of "cameras near a point".
POSTGRES_ONLY_INDEXES = {"cameras_position"}

Column = tuple[str, str, bool, str | None]  # name, type, not null, default


def _sqlite_columns(path: Path) -> dict[str, list[Column]]:
    Registry(path).close()
    db = SqliteDatabase(path)
    db.schema(RELAY_SCHEMA)
    tables = {}
    for table in TABLES:
        tables[table] = [(name, TYPES[declared], bool(notnull) or bool(pk), default)
                         for _, name, declared, notnull, default, pk
                         in db.execute(f"PRAGMA table_info({table})")]
    db.close()
    return tables


def _postgres_default(default: str | None) -> str | None:
    if default is None or default.startswith("nextval("):  # BIGSERIAL: SQLite's rowid alias
        return None
    return re.sub(r"::[a-z ]+$", "", default)


def _postgres_columns(dsn: str) -> dict[str, list[Column]]:
    Registry(dsn).close()  # migrates
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = ANY(%s) ORDER BY table_name, ordinal_position",
            [list(TABLES)]).fetchall()
    tables: dict[str, list[Column]] = {table: [] for table in TABLES}
    for table, name, data_type, nullable, default in rows:
        tables[table].append((name, data_type, nullable == "NO", _postgres_default(default)))
    return tables


def test_the_migration_has_the_sqlite_schemas_columns(tmp_path: Path, pg_dsn: str) -> None:
    sqlite, postgres = _sqlite_columns(tmp_path / "core.sqlite3"), _postgres_columns(pg_dsn)
    for table in TABLES:
        assert postgres[table] == sqlite[table], table


def test_the_migration_has_the_sqlite_schemas_indexes(tmp_path: Path, pg_dsn: str) -> None:
    path = tmp_path / "core.sqlite3"
    Registry(path).close()
    db = SqliteDatabase(path)
    sqlite = {(table, row[1]) for table in TABLES for row in db.execute(f"PRAGMA index_list({table})")
              if not str(row[1]).startswith("sqlite_autoindex")}
    db.close()
    Registry(pg_dsn).close()
    with psycopg.connect(pg_dsn) as conn:
        postgres = {(table, name) for table, name in conn.execute(
            "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename = ANY(%s) AND indexname NOT LIKE '%%\\_pkey' "
            "AND indexname NOT LIKE '%%\\_key'", [list(TABLES)])}
    assert {name for _, name in postgres - sqlite} == POSTGRES_ONLY_INDEXES
    assert sqlite <= postgres
