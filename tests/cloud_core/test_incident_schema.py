"""The incident stores' PostgreSQL tables (migrations 0002, 0004) against their SQLite schema:
the same tables, columns in the same order with matching types, nullability and defaults, the
same primary keys and the same other indexes, so the two backends cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from cloud_core.evidence import ClipStore
from cloud_core.golden_time import GoldenTimeStore
from cloud_core.incidents import IncidentStore
from cloud_core.operators import OperatorStore
from cloud_core.storage.database import Database, SqliteDatabase, open_database
from cloud_core.wearables import WearableSubjects

TABLES: Final = ("incidents", "incident_areas", "break_glass", "facilities",
                 "incident_positions", "incident_links", "incident_refs",
                 "dispatch_assignments", "dispatch_pushes", "wearable_subjects", "golden_time",
                 "evidence_clips", "operators")
POSTGRES_TYPES: Final = {"TEXT": {"text"}, "REAL": {"double precision"},
                         "INTEGER": {"bigint", "integer"}, "BLOB": {"bytea"}}

Column = tuple[str, str, bool, str | None]  # name, SQLite type, nullable, default
Index = tuple[bool, tuple[str, ...]]         # unique, columns


def create_every_table(db: Database) -> None:
    IncidentStore(db)  # with its trail and dispatch stores
    WearableSubjects(db)
    GoldenTimeStore(db)
    ClipStore(db)
    OperatorStore(db)


def sqlite_table(db: SqliteDatabase, table: str) -> tuple[list[Column], list[str], set[Index]]:
    info = db.execute(f"PRAGMA table_info({table})").fetchall()
    key = [str(r[1]) for r in sorted((r for r in info if r[5]), key=lambda r: int(r[5]))]
    columns = [(str(name), str(kind), not notnull and name not in key,
                None if default is None else str(default))
               for _, name, kind, notnull, default, _ in info]
    indexes = set()
    for _, name, unique, origin, _ in db.execute(f"PRAGMA index_list({table})").fetchall():
        if origin != "pk":
            names = db.execute(f"PRAGMA index_info({name})").fetchall()
            indexes.add((bool(unique), tuple(str(r[2]) for r in names)))
    return columns, key, indexes


def postgres_table(db: Database, table: str) -> tuple[list[tuple[str, str, bool, str | None]],
                                                        list[str], set[Index]]:
    columns = [(str(name), str(kind), nullable == "YES",
                None if default is None else str(default).removesuffix("::text"))
               for name, kind, nullable, default in db.execute(
                   "SELECT column_name, data_type, is_nullable, column_default "
                   "FROM information_schema.columns WHERE table_schema = current_schema() "
                   "AND table_name = ? ORDER BY ordinal_position", [table])]
    indexes: list[tuple[bool, bool, list[str]]] = [
        (bool(primary), bool(unique), list(names)) for primary, unique, names in db.execute(
            "SELECT ix.indisprimary, ix.indisunique, ARRAY(SELECT a.attname FROM "
            "unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord) JOIN pg_attribute a "
            "ON a.attrelid = t.oid AND a.attnum = k.attnum ORDER BY k.ord) "
            "FROM pg_class t JOIN pg_index ix ON ix.indrelid = t.oid "
            "WHERE t.relname = ? AND t.relnamespace = current_schema()::regnamespace",
            [table])]
    key = next((names for primary, _, names in indexes if primary), [])
    return columns, key, {(unique, tuple(names)) for primary, unique, names in indexes
                          if not primary}


def test_the_postgres_migrations_match_the_sqlite_schema(tmp_path: Path, pg_dsn: str) -> None:
    sqlite = SqliteDatabase(tmp_path / "core.sqlite3")
    postgres = open_database(pg_dsn)
    try:
        create_every_table(sqlite)
        create_every_table(postgres)  # nothing: the migrations made the tables
        for table in TABLES:
            lite_columns, lite_key, lite_indexes = sqlite_table(sqlite, table)
            pg_columns, pg_key, pg_indexes = postgres_table(postgres, table)
            assert lite_columns, f"SQLite has no table {table}"
            assert pg_columns, f"no migration creates {table}"
            assert [c[0] for c in pg_columns] == [c[0] for c in lite_columns], table
            for (name, lite_type, lite_null, lite_default), (_, pg_type, pg_null, pg_default) \
                    in zip(lite_columns, pg_columns, strict=True):
                where = f"{table}.{name}"
                assert pg_type in POSTGRES_TYPES[lite_type], f"{where}: {pg_type} for {lite_type}"
                assert pg_null == lite_null, f"{where}: nullable {pg_null} on PostgreSQL"
                assert pg_default == lite_default, f"{where}: default {pg_default!r}"
            assert pg_key == lite_key, f"{table}: primary key"
            assert pg_indexes == lite_indexes, f"{table}: indexes"
    finally:
        sqlite.close()
        postgres.close()
