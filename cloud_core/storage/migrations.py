"""The PostgreSQL schema's versions: ``migrations/NNNN_name.sql``, applied in order, once.

``safetynet_schema_version`` holds one row per applied migration. Replicas migrate under one
advisory lock, so two starting at once apply each file once. A replica whose newest migration is
older than the database's refuses to start (``SchemaTooNew``): an old core must not write to
tables a newer one has changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

from cloud_core.exceptions import SchemaTooNew, StorageError

if TYPE_CHECKING:
    import psycopg

MIGRATION_LOCK: Final = 0x5AFE0A0D1701
VERSION_TABLE: Final = "safetynet_schema_version"
_NAME: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with this core, oldest first."""
    folder = resources.files("cloud_core.storage") / "migrations"
    found = []
    for item in folder.iterdir():
        match = _NAME.match(item.name)
        if match is not None:
            found.append(Migration(int(match[1]), match[2], item.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations are not numbered 1..n: {[m.version for m in found]}")
    return found


def latest_version() -> int:
    return available()[-1].version


def current_version(conn: psycopg.Connection[Any]) -> int:
    """The database's schema version; 0 when none was ever applied."""
    if conn.execute("SELECT to_regclass(%s)", (VERSION_TABLE,)).fetchone() == (None,):
        return 0
    row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()
    return int(row[0]) if row is not None else 0


def check_not_newer(conn: psycopg.Connection[Any], database: str) -> int:
    """The database's version; ``SchemaTooNew`` if this core does not know it."""
    version, known = current_version(conn), latest_version()
    if version > known:
        raise SchemaTooNew(database, version, known)
    return version


def migrate(conn: psycopg.Connection[Any], database: str) -> list[int]:
    """Apply every missing migration in one transaction; return the versions applied.

    ``conn`` is in autocommit mode. Raises ``SchemaTooNew`` before changing anything.
    """
    import psycopg

    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
                         "version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                         "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            current = check_not_newer(conn, database)
            applied = []
            for migration in available():
                if migration.version <= current:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version, name) VALUES (%s, %s)",
                             (migration.version, migration.name))
                applied.append(migration.version)
            return applied
    except psycopg.Error as exc:
        raise StorageError(database, f"cannot migrate the schema: {exc}") from exc
