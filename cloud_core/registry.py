"""The registry of districts, agents, cameras and sessions, on the core's ``Database``: a SQLite
file (WAL) for a pilot, or PostgreSQL shared by several core replicas.

Fed by MQTT status from the agents, in batches (``apply``: one transaction per batch). "Cameras
near a point" takes a bounding box (an R*Tree over camera positions on SQLite, a btree on
``(lat, lon)`` on PostgreSQL), then exact great-circle distances rank, cut to the radius and to
the limit.

Every replica ingests the same statuses, so every write is an idempotent upsert that decides in
SQL: a camera status older (by the agent's ``changed_at``) than the stored one changes nothing,
an agent status of an older connection (by its ``connected_at``) than the stored one neither,
and a batch takes the next camera version under a lock of ``registry_meta``'s row (PostgreSQL:
``FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``), so versions never collide and commit in order.

Change log: every camera row carries the ``version`` of the batch that last changed what a console
shows of it (district, name, position, effective state); ``registry_meta.camera_version`` is the
newest. ``changes_between(a, b)`` is then "every camera whose shown state changed after a", the
source of the console's pushed changes. Heavy reads for other threads (``snapshot_rows``,
``changes_between``, ``page_rows``) go through a reader connection of their own on SQLite, and
through the pool in one snapshot on PostgreSQL.

Whether the core reaches its broker is this process's own knowledge (``broker_reachable``), not
the database's: one replica losing its broker shows its consoles every camera ``unknown``, not
another replica's.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from cloud_core.exceptions import RegistryError, StorageError
from cloud_core.policy import EARTH_RADIUS_M, Basis, distance_m
from cloud_core.storage.base import Location, describe, is_postgres, normalise
from cloud_core.storage.database import (
    Database,
    DatabaseError,
    Result,
    SqliteDatabase,
    open_database,
)
from cloud_core.timestamps import iso

log = structlog.get_logger(__name__)

NEAR_FIRST_REACH_M = 250.0   # a limited near query searches this far first, then twice as far...

# The console's camera fields, in this order, in snapshots and in pushed changes.
CONSOLE_FIELDS = ("camera_id", "district_id", "name", "lat", "lon", "state")
ConsoleRow = tuple[str, str, str, float, float, str]


@dataclass(frozen=True)
class CameraRecord:
    camera_id: str
    district_id: str
    name: str
    lat: float
    lon: float
    kind: str
    status: str              # "online" | "offline" (as the agent last reported)
    reason: str
    detail: str
    viewers: int
    last_seen: datetime | None
    agent_online: bool
    distance_m: float | None = None
    broker_reachable: bool = True  # False while the core cannot reach the broker: status unknown

    @property
    def effective_status(self) -> str:
        return effective_state(self.status, self.reason, agent_online=self.agent_online,
                               broker_reachable=self.broker_reachable)[0]

    @property
    def effective_reason(self) -> str:
        return effective_state(self.status, self.reason, agent_online=self.agent_online,
                               broker_reachable=self.broker_reachable)[1]


def effective_state(status: str, reason: str, *, agent_online: bool,
                    broker_reachable: bool) -> tuple[str, str]:
    """What a camera is, as far as anyone may rely on it: (status, reason)."""
    if not broker_reachable:
        return "unknown", "broker_unreachable"
    return (status, reason) if agent_online else ("offline", "agent_offline")


@dataclass(frozen=True)
class CameraUpdate:
    camera_id: str
    district_id: str
    name: str
    lat: float
    lon: float
    kind: str
    status: str
    reason: str
    detail: str
    viewers: int
    seen_at: datetime
    #: When the agent saw this state begin (its ``changed_at``); None when it did not say.
    changed_at: datetime | None = None


@dataclass(frozen=True)
class AgentUpdate:
    district_id: str
    name: str
    agent_id: str
    online: bool
    software_version: str
    seen_at: datetime
    #: When the agent's link began the connection this status belongs to (its will and its
    #: online carry the same); None when it did not say (an older agent): applied as it comes.
    connected_at: datetime | None = None


@dataclass(frozen=True)
class StatusBatch:
    """What one registry transaction writes: agent states, camera statuses, heartbeat districts."""

    agents: Sequence[AgentUpdate] = ()
    cameras: Sequence[CameraUpdate] = ()
    heartbeats: Sequence[str] = ()   # districts whose heartbeat arrived (their last_seen moves)
    seen_at: datetime | None = None
    #: (district, connection) of heartbeats that name their connection: proof the agent is
    #: online on it, when it is newer than the one stored (a late will of an older one came last).
    alive: Sequence[tuple[str, datetime]] = ()


@dataclass(frozen=True)
class DistrictRecord:
    district_id: str
    name: str
    agent_id: str
    agent_online: bool
    software_version: str
    last_seen: datetime | None


SCHEMA = """
CREATE TABLE IF NOT EXISTS districts (
    district_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    agent_id TEXT NOT NULL DEFAULT '',
    agent_online INTEGER NOT NULL DEFAULT 0,
    software_version TEXT NOT NULL DEFAULT '',
    last_seen TEXT,
    connected_at_us INTEGER
);
CREATE TABLE IF NOT EXISTS cameras (
    rowid INTEGER PRIMARY KEY,
    camera_id TEXT NOT NULL UNIQUE,
    district_id TEXT NOT NULL,
    name TEXT NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'online',
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    viewers INTEGER NOT NULL DEFAULT 0,
    last_seen TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    changed_at_us INTEGER
);
CREATE INDEX IF NOT EXISTS cameras_district ON cameras(district_id);
CREATE TABLE IF NOT EXISTS registry_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO registry_meta (key, value) VALUES ('camera_version', 0);
CREATE VIRTUAL TABLE IF NOT EXISTS cameras_rtree USING rtree(id, min_lat, max_lat, min_lon, max_lon);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    camera_id TEXT NOT NULL,
    district_id TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    closed_at TEXT,
    close_reason TEXT,
    bytes_sent INTEGER,
    duration_seconds REAL,
    operator_id TEXT NOT NULL DEFAULT '',
    agency TEXT NOT NULL DEFAULT '',
    incident_id TEXT NOT NULL DEFAULT '',
    breakglass_id TEXT NOT NULL DEFAULT '',
    basis TEXT NOT NULL DEFAULT '',
    relay_id TEXT NOT NULL DEFAULT '',
    reported_at TEXT
);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions(closed_at);
"""
#: Columns added after the pilot: a SQLite registry made before them gets them on open.
_ADDED_COLUMNS = (
    ("cameras", "version", "INTEGER NOT NULL DEFAULT 0"),
    ("cameras", "changed_at_us", "INTEGER"),
    ("sessions", "relay_id", "TEXT NOT NULL DEFAULT ''"),
    ("sessions", "reported_at", "TEXT"),
    ("districts", "connected_at_us", "INTEGER"),
)
_VERSION_INDEX = "CREATE INDEX IF NOT EXISTS cameras_version ON cameras(version)"

_CAMERA_INSERT = """
INSERT INTO cameras (camera_id, district_id, name, lat, lon, kind, status, reason, detail, viewers,
                     last_seen, changed_at_us, version)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (camera_id) DO UPDATE SET
  version = CASE WHEN cameras.district_id {ne} excluded.district_id
                   OR cameras.name {ne} excluded.name OR cameras.lat {ne} excluded.lat
                   OR cameras.lon {ne} excluded.lon OR cameras.status {ne} excluded.status
                 THEN excluded.version ELSE cameras.version END,
  district_id = excluded.district_id, name = excluded.name, lat = excluded.lat,
  lon = excluded.lon, kind = excluded.kind, status = excluded.status, reason = excluded.reason,
  detail = excluded.detail, viewers = excluded.viewers, last_seen = excluded.last_seen,
  changed_at_us = COALESCE(excluded.changed_at_us, cameras.changed_at_us)
WHERE cameras.district_id = excluded.district_id
  AND (excluded.changed_at_us IS NULL OR cameras.changed_at_us IS NULL
       OR excluded.changed_at_us >= cameras.changed_at_us)
"""
#: The spatial index (SQLite), for the cameras of ``version`` that are new or moved (most
#: changes are a status, not a position). The R-tree keeps 32-bit floats: "moved" is > ~1 m.
_PLACE_CHANGED = """
INSERT OR REPLACE INTO cameras_rtree (id, min_lat, max_lat, min_lon, max_lon)
SELECT c.rowid, c.lat, c.lat, c.lon, c.lon FROM cameras c LEFT JOIN cameras_rtree r ON r.id = c.rowid
WHERE c.version = ? AND (r.id IS NULL OR abs(r.min_lat - c.lat) > 1e-5 OR abs(r.min_lon - c.lon) > 1e-5)
"""
#: An agent status of an older connection than the stored one changes nothing (a late last will
#: of a connection the agent has replaced); of the same connection, offline beats online (the
#: will, or a clean stop, comes after that connection's online). Undated statuses apply as sent.
_UPSERT_AGENT = """
INSERT INTO districts (district_id, name, agent_id, agent_online, software_version, last_seen,
                       connected_at_us)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (district_id) DO UPDATE SET name = excluded.name, agent_id = excluded.agent_id,
  agent_online = excluded.agent_online, software_version = excluded.software_version,
  last_seen = excluded.last_seen,
  connected_at_us = COALESCE(excluded.connected_at_us, districts.connected_at_us)
WHERE excluded.connected_at_us IS NULL OR districts.connected_at_us IS NULL
   OR excluded.connected_at_us > districts.connected_at_us
   OR (excluded.connected_at_us = districts.connected_at_us
       AND excluded.agent_online <= districts.agent_online)
"""
_CAMERA_VERSION = "SELECT value FROM registry_meta WHERE key = 'camera_version'"
_ONLINE = "CASE WHEN c.status = 'online' AND COALESCE(d.agent_online, 0) = 1 " \
          "THEN 'online' ELSE 'offline' END"


def _effective_state(broker_reachable: bool) -> str:
    """SQL for a camera's effective state (``effective_state``), as this core sees it."""
    return _ONLINE if broker_reachable else "'unknown'"


_CONSOLE_COLUMNS = {reachable: ("c.camera_id, c.district_id, c.name, c.lat, c.lon, "
                                + _effective_state(reachable))
                    for reachable in (True, False)}

#: The fields of a camera row (``page_rows``), in order.
CAMERA_ROW_FIELDS = ("camera_id", "district_id", "name", "lat", "lon", "kind", "status", "reason",
                     "detail", "viewers", "last_seen", "agent_online")
CameraRow = tuple[str, str, str, float, float, str, str, str, str, int, str, int]


@dataclass(frozen=True)
class _Statements:
    """The registry's SQL where the engines differ."""

    upsert_camera: str
    camera_columns: str
    lock_camera_version: str   # read the version, holding it until the transaction ends
    box: str                   # the bounding box: lat from, lat to, lon from, lon to


def _statements(db: Database) -> _Statements:
    dialect = db.dialect
    return _Statements(
        upsert_camera=_CAMERA_INSERT.format(
            ne="IS NOT" if dialect == "sqlite" else "IS DISTINCT FROM"),
        camera_columns=(
            "c.camera_id, c.district_id, c.name, c.lat, c.lon, c.kind, c.status, c.reason, "
            # A camera was last seen when its own status or its district's snapshot last came:
            # the ingest skips a snapshot's unchanged cameras; the district's last_seen stands
            # for them.
            "c.detail, c.viewers, "
            + db.greatest("COALESCE(c.last_seen, '')", "COALESCE(d.last_seen, '')")
            + ", COALESCE(d.agent_online, 0)"),
        lock_camera_version=_CAMERA_VERSION + ("" if dialect == "sqlite" else " FOR UPDATE"),
        box=("c.rowid IN (SELECT id FROM cameras_rtree WHERE max_lat >= ? AND min_lat <= ? "
             "AND max_lon >= ? AND min_lon <= ?)" if dialect == "sqlite"
             else "c.lat BETWEEN ? AND ? AND c.lon BETWEEN ? AND ?"),
    )


_SESSION_KEYS = ("session_id", "camera_id", "district_id", "opened_at", "expires_at", "closed_at",
                 "close_reason", "bytes_sent", "duration_seconds", "operator_id", "agency",
                 "incident_id", "breakglass_id", "basis", "relay_id")
_SESSION_COLUMNS = ", ".join(_SESSION_KEYS)


def _microseconds(moment: datetime | None) -> int | None:
    """A camera's ``changed_at`` as it is stored: microseconds since the epoch, an integer the
    engine compares (and a fifth of an ISO text's cost to make)."""
    return None if moment is None else round(moment.timestamp() * 1e6)


def _exact_microseconds(moment: datetime | None) -> int | None:
    """An agent's ``connected_at`` as stored: exact integer microseconds since the epoch, so a
    will and an online of one connection compare equal."""
    return None if moment is None else (moment - _EPOCH) // timedelta(microseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Registry:
    """Synchronous and fast (sub-millisecond queries); callers on the event loop call it directly.

    ``Registry(location)`` opens a SQLite path or a ``postgresql://`` URL; ``Registry(database)``
    works on a database already open (and leaves closing it to its owner).
    """

    def __init__(self, location: Location | Database) -> None:
        #: Whether the core holds its broker connection; while not, no status is current.
        self.broker_reachable = True
        self._owns_db = not isinstance(location, Database)
        try:
            if isinstance(location, Database):
                self.db = location
            else:
                self.db = open_database(normalise(location))
            self._sql = _statements(self.db)
            if isinstance(self.db, SqliteDatabase):
                self._sqlite_schema(self.db)
        except StorageError as exc:
            if not isinstance(location, Database) and is_postgres(location):
                raise  # DatabaseUnavailable, SchemaTooNew: clear as they are
            raise RegistryError(f"cannot open registry {describe(str(location))}: {exc}") from exc
        except DatabaseError as exc:
            raise RegistryError(f"cannot open registry {self.db.location}: {exc}") from exc
        self._reader: SqliteDatabase | None = None
        self._reader_lock = threading.Lock()

    @staticmethod
    def _sqlite_schema(db: SqliteDatabase) -> None:
        db.schema(SCHEMA)
        for table, column, declaration in _ADDED_COLUMNS:
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()}
            if column not in columns:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        db.execute(_VERSION_INDEX)

    @property
    def location(self) -> str:
        """Where the registry is, fit for a log line."""
        return self.db.location

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        if self._owns_db:
            self.db.close()

    def writer(self) -> Registry:
        """A registry for a writer thread: on SQLite another connection to the same file (WAL:
        readers go on); on PostgreSQL the same pool."""
        if isinstance(self.db, SqliteDatabase):
            return Registry(self.db.path)
        return Registry(self.db)

    # --- writes -----------------------------------------------------------------------------

    def apply(self, batch: StatusBatch) -> int:
        """Write one batch in one transaction; return the registry's camera version after it."""
        seen = iso(batch.seen_at or datetime.now(UTC))
        stamps: dict[datetime, str | None] = {}  # a batch's cameras share a few seen_at

        def seen_text(moment: datetime | None) -> str | None:
            if moment is None:
                return seen
            text = stamps.get(moment)
            if text is None:
                text = stamps[moment] = iso(moment)
            return text

        db = self.db
        with self._transaction():
            version = int(db.scalar(self._sql.lock_camera_version)) + 1
            for agent in batch.agents:
                self._apply_agent(agent, version)
            districts = {u.district_id for u in batch.cameras}
            db.executemany("INSERT INTO districts (district_id, name) VALUES (?, ?) "
                           "ON CONFLICT (district_id) DO NOTHING",
                           [(d, d) for d in sorted(districts)])
            written = db.executemany(self._sql.upsert_camera, [
                (u.camera_id, u.district_id, u.name, u.lat, u.lon, u.kind, u.status, u.reason,
                 u.detail, u.viewers, seen_text(u.seen_at), _microseconds(u.changed_at), version)
                for u in batch.cameras])
            if (ignored := len(batch.cameras) - written) > 0:
                # Another district's camera (a district may only speak for its own), or a status
                # older than the one stored (another replica wrote a newer one first).
                log.info("camera statuses not written: another district's camera, or older than "
                         "the stored status", ignored=ignored)
            db.executemany("UPDATE districts SET last_seen = ? WHERE district_id = ?",
                           [(seen, d) for d in batch.heartbeats])
            for district_id, connected_at in batch.alive:
                self._apply_alive(district_id, connected_at, version)
            if not db.scalar("SELECT EXISTS(SELECT 1 FROM cameras WHERE version = ?)", [version]):
                return version - 1
            if db.dialect == "sqlite":
                db.execute(_PLACE_CHANGED, [version])
            db.execute("UPDATE registry_meta SET value = ? WHERE key = 'camera_version'",
                       [version])
        return version

    def _apply_alive(self, district_id: str, connected_at: datetime, version: int) -> None:
        """A heartbeat of a newer connection than the stored one: its agent is online on it."""
        db = self.db
        if db.execute(
                "UPDATE districts SET agent_online = 1, connected_at_us = ? WHERE district_id = ? "
                "AND agent_online = 0 AND connected_at_us IS NOT NULL AND connected_at_us < ?",
                [_exact_microseconds(connected_at), district_id,
                 _exact_microseconds(connected_at)]).rowcount:
            log.info("agent online by its heartbeat: its status on the broker was an older "
                     "connection's", district=district_id, connected_at=iso(connected_at))
            db.execute("UPDATE cameras SET version = ? WHERE district_id = ?",
                       [version, district_id])

    def _apply_agent(self, agent: AgentUpdate, version: int) -> None:
        db = self.db
        row = db.execute("SELECT agent_online FROM districts WHERE district_id = ?",
                         [agent.district_id]).fetchone()
        written = db.execute(_UPSERT_AGENT, [
            agent.district_id, agent.name or agent.district_id, agent.agent_id,
            int(agent.online), agent.software_version, iso(agent.seen_at),
            _exact_microseconds(agent.connected_at)]).rowcount
        if written == 0:
            log.info("agent status not written: of an older connection than the stored one, or "
                     "online after its own connection's offline", district=agent.district_id,
                     online=agent.online,
                     connected_at=None if agent.connected_at is None else iso(agent.connected_at))
            return
        if row is None or bool(row[0]) != agent.online:
            # Every camera's effective state follows its agent: they all changed.
            db.execute("UPDATE cameras SET version = ? WHERE district_id = ?",
                       [version, agent.district_id])

    def set_broker_reachable(self, reachable: bool) -> int:
        """Whether the core holds its broker connection, for what consoles are shown (every
        camera ``unknown`` while not): all cameras change; return the version after."""
        self.broker_reachable = reachable
        db = self.db
        with self._transaction():
            version = int(db.scalar(self._sql.lock_camera_version)) + 1
            db.execute("UPDATE cameras SET version = ?", [version])
            db.execute("UPDATE registry_meta SET value = ? WHERE key = 'camera_version'",
                       [version])
        return version

    def mark_silent_agents(self, seen_before: datetime) -> tuple[list[str], int]:
        """Take every agent last heard from before ``seen_before`` for offline (its node may
        have died with it, and its last will with the node); return those districts and the
        camera version after (0: none). A status or heartbeat that arrives meanwhile keeps
        its district online: the check and the change are one statement each, in one
        transaction. The stored connection stays, so that agent's next connection (a newer
        one) is online again as soon as it says so."""
        db = self.db
        cutoff = iso(seen_before)
        with self._transaction():
            silent = [str(row[0]) for row in db.execute(
                "SELECT district_id FROM districts WHERE agent_online = 1 AND last_seen < ? "
                "ORDER BY district_id", [cutoff])]
            if not silent:
                return [], 0
            version = int(db.scalar(self._sql.lock_camera_version)) + 1
            marked = []
            for district_id in silent:
                if db.execute("UPDATE districts SET agent_online = 0 WHERE district_id = ? "
                              "AND agent_online = 1 AND last_seen < ?",
                              [district_id, cutoff]).rowcount:
                    db.execute("UPDATE cameras SET version = ? WHERE district_id = ?",
                               [version, district_id])
                    marked.append(district_id)
            db.execute("UPDATE registry_meta SET value = ? WHERE key = 'camera_version'",
                       [version])
        return marked, version

    def set_agent(self, district_id: str, name: str, agent_id: str, online: bool,
                  software_version: str, seen_at: datetime, *,
                  connected_at: datetime | None = None) -> None:
        self.apply(StatusBatch(agents=[AgentUpdate(district_id, name, agent_id, online,
                                                   software_version, seen_at, connected_at)]))

    def upsert_cameras(self, updates: Iterable[CameraUpdate]) -> int:
        """Write a batch of camera statuses in one transaction; return how many."""
        batch = list(updates)
        self.apply(StatusBatch(cameras=batch))
        return len(batch)

    def touch_cameras(self, district_id: str, seen_at: datetime) -> None:
        self.apply(StatusBatch(heartbeats=[district_id], seen_at=seen_at))

    def record_session(self, session_id: str, camera_id: str, district_id: str,
                       opened_at: datetime, expires_at: datetime, *, operator_id: str = "",
                       agency: str = "", incident_id: str = "", breakglass_id: str = "",
                       basis: str = "", relay_id: str = "") -> None:
        """A session the agent (or, with ``relay_id``, a cloud relay) answered."""
        self._write(
            "INSERT INTO sessions (session_id, camera_id, district_id, opened_at, expires_at, "
            "operator_id, agency, incident_id, breakglass_id, basis, relay_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [session_id, camera_id, district_id, iso(opened_at), iso(expires_at),
             operator_id, agency, incident_id, breakglass_id, basis, relay_id],
        )

    def end_session(self, session_id: str, closed_at: datetime, reason: str,
                    bytes_sent: int | None = None, duration_seconds: float | None = None) -> bool:
        """Mark a session closed (first reason wins); later reports may still add the figures."""
        close = ("UPDATE sessions SET closed_at = ?, close_reason = ? "
                 "WHERE session_id = ? AND closed_at IS NULL")
        if bytes_sent is None and duration_seconds is None:
            # One statement is its own transaction: on PostgreSQL no BEGIN and COMMIT round trips.
            return self._write(close, [iso(closed_at), reason, session_id]).rowcount > 0
        with self._transaction():
            result = self.db.execute(close, [iso(closed_at), reason, session_id])
            self.db.execute(
                "UPDATE sessions SET bytes_sent = COALESCE(?, bytes_sent), "
                "duration_seconds = COALESCE(?, duration_seconds) WHERE session_id = ?",
                [bytes_sent, duration_seconds, session_id],
            )
            return result.rowcount > 0

    def close_session(self, session_id: str, closed_at: datetime, reason: str, *,
                      operator_id: str | None = None,
                      agency: str | None = None) -> dict[str, object] | None:
        """Mark an open session closed and return its row, in one statement; None when there is
        no such open session. With ``operator_id``, only one that operator opened, or (with
        ``agency``, a supervisor's) one of that agency's: anyone else's is none."""
        sql = ("UPDATE sessions SET closed_at = ?, close_reason = ? "
               "WHERE session_id = ? AND closed_at IS NULL")
        params: list[object] = [iso(closed_at), reason, session_id]
        if operator_id is not None:
            # agency None: "agency = NULL", true of no row.
            sql += " AND (operator_id = ? OR agency = ?)"
            params += [operator_id, agency]
        row = self._write(f"{sql} RETURNING {_SESSION_COLUMNS}", params).fetchone()
        return dict(zip(_SESSION_KEYS, row, strict=True)) if row else None

    def take_end_report(self, session_id: str, reported_at: datetime, bytes_sent: int,
                        duration_seconds: float) -> bool:
        """Record the agent's account of a session's end, once: True for the first taker (of
        every replica that received it, and of an MQTT redelivery), False after."""
        return self._write(
            "UPDATE sessions SET reported_at = ?, bytes_sent = ?, duration_seconds = ? "
            "WHERE session_id = ? AND reported_at IS NULL",
            [iso(reported_at), bytes_sent, duration_seconds, session_id]).rowcount > 0

    def end_district_sessions(self, district_id: str, closed_at: datetime,
                              reason: str) -> list[dict[str, object]]:
        """Close every open session of ``district_id`` (its agent is gone); the rows closed."""
        rows = [r for r in self.open_sessions() if r["district_id"] == district_id]
        return [r for r in rows if self.end_session(str(r["session_id"]), closed_at, reason)]

    def open_sessions(self) -> list[dict[str, object]]:
        rows = self._read(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE closed_at IS NULL").fetchall()
        return [dict(zip(_SESSION_KEYS, row, strict=True)) for row in rows]

    def open_relay_upstreams(self, camera_id: str = "") -> list[dict[str, object]]:
        """The open upstream sessions of cloud relays (``basis`` relay: a relay pulling a camera
        for an incident's viewers), oldest first; only ``camera_id``'s when given. Every replica
        reads the same, whichever started them."""
        sql = f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE closed_at IS NULL AND basis = ?"
        params: list[object] = ["relay"]
        if camera_id:
            sql += " AND camera_id = ?"
            params.append(camera_id)
        rows = self._read(sql + " ORDER BY opened_at, session_id", params).fetchall()
        return [dict(zip(_SESSION_KEYS, row, strict=True)) for row in rows]

    def open_sessions_counted_for(self, operator_id: str, agency: str,
                                  district_id: str) -> list[dict[str, object]]:
        """The open sessions a new one's caps count (``session_capacity``): the operator's own
        and the agency's standing ones in the district, not every open session in the city."""
        rows = self._read(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE closed_at IS NULL AND "
            "(operator_id = ? OR (agency = ? AND district_id = ? AND basis = ?))",
            [operator_id, agency, district_id, Basis.DISTRICT_OWN.value]).fetchall()
        return [dict(zip(_SESSION_KEYS, row, strict=True)) for row in rows]

    # --- reads ------------------------------------------------------------------------------

    def camera(self, camera_id: str) -> CameraRecord | None:
        row = self._read(
            f"SELECT {self._sql.camera_columns} FROM cameras c "
            "LEFT JOIN districts d USING (district_id) WHERE c.camera_id = ?", [camera_id],
        ).fetchone()
        return _camera(row, broker_reachable=self.broker_reachable) if row else None

    def district(self, district_id: str) -> DistrictRecord | None:
        row = self._read(
            "SELECT district_id, name, agent_id, agent_online, software_version, last_seen "
            "FROM districts WHERE district_id = ?", [district_id],
        ).fetchone()
        if row is None:
            return None
        return DistrictRecord(row[0], row[1], row[2], bool(row[3]), row[4], _parse(row[5]))

    def districts(self) -> list[DistrictRecord]:
        rows = self._read(
            "SELECT district_id, name, agent_id, agent_online, software_version, last_seen "
            "FROM districts ORDER BY district_id").fetchall()
        return [DistrictRecord(r[0], r[1], r[2], bool(r[3]), r[4], _parse(r[5])) for r in rows]

    def session(self, session_id: str) -> dict[str, object] | None:
        row = self._read(f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id = ?",
                         [session_id]).fetchone()
        return dict(zip(_SESSION_KEYS, row, strict=True)) if row else None

    def list_cameras(self, *, district_id: str = "", status: str = "",
                     near: tuple[float, float, float] | None = None,
                     limit: int = 0, after: str = "") -> list[CameraRecord]:
        """Filter by district and effective status, ordered by id (``after``: ids past it only).

        ``near`` = (lat, lon, radius_m) ranks by distance instead: the spatial index gives the
        candidates in the bounding box, exact distances cut them to the circle, and only the
        ``limit`` nearest (0: all) are read in full.
        """
        where, params = _filters(district_id, status)
        if near is not None:
            return self._near(near, where, params, limit)
        sql, params = _page_query(self._sql.camera_columns, where, params, after, limit)
        return [_camera(row, broker_reachable=self.broker_reachable)
                for row in self._read(sql, params).fetchall()]

    def page_rows(self, *, district_id: str = "", status: str = "", after: str = "",
                  limit: int = 0) -> list[CameraRow]:
        """``list_cameras`` by id as bare rows (``CAMERA_ROW_FIELDS``), read on the reader
        connection: for a thread, off the loop. A 5,000-camera page made into records and then
        into messages spent half its time on the records."""
        where, params = _filters(district_id, status)
        sql, params = _page_query(self._sql.camera_columns, where, params, after, limit)
        with self._reading() as db:
            return db.execute(sql, params).fetchall()

    def _near(self, near: tuple[float, float, float], where: list[str], params: list[object],
              limit: int) -> list[CameraRecord]:
        """With a ``limit``, search a small circle first and widen it (x2) until it holds
        ``limit`` cameras or is the whole radius: cameras outside a circle are all farther than
        those inside, so the nearest ``limit`` inside it are the nearest overall. Fifty cameras
        in a 3 km city-centre circle (~3,000 cameras) then cost two small box queries."""
        lat, lon, radius = near
        reach = min(radius, NEAR_FIRST_REACH_M) if limit else radius
        while True:
            ranked = self._ranked_within(lat, lon, reach, where, params)
            if not limit or len(ranked) >= limit or reach >= radius:
                break
            reach = min(radius, reach * 2)
        if limit:
            ranked = ranked[:limit]
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = {row[-1]: row for row in self._read(
            f"SELECT {self._sql.camera_columns}, c.rowid FROM cameras c LEFT JOIN districts d "
            f"ON d.district_id = c.district_id WHERE c.rowid IN ({marks})",
            [rowid for _, _, rowid in ranked]).fetchall()}
        return [_camera(rows[rowid], distance, self.broker_reachable)
                for distance, _, rowid in ranked if rowid in rows]

    def _ranked_within(self, lat: float, lon: float, radius: float, where: list[str],
                       params: list[object]) -> list[tuple[float, str, int]]:
        """(distance, camera id, rowid) of the cameras within ``radius``, nearest first: the
        spatial index gives the bounding box, exact great-circle distances cut it to the circle."""
        dlat = math.degrees(radius / EARTH_RADIUS_M)
        dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
        sql = ("SELECT c.rowid, c.lat, c.lon, c.camera_id FROM cameras c "
               "LEFT JOIN districts d ON d.district_id = c.district_id WHERE "
               + " AND ".join([self._sql.box, *where]))
        candidates = self._read(
            sql, [lat - dlat, lat + dlat, lon - dlon, lon + dlon, *params]).fetchall()
        return sorted(
            (d, camera_id, rowid) for rowid, clat, clon, camera_id in candidates
            if (d := distance_m(lat, lon, clat, clon)) <= radius)

    # --- the console's change log -------------------------------------------------------------

    def camera_version(self) -> int:
        return int(self._read(_CAMERA_VERSION).fetchall()[0][0])

    def agents(self) -> dict[str, bool]:
        return {d.district_id: d.agent_online for d in self.districts()}

    def snapshot_rows(self) -> tuple[int, list[ConsoleRow]]:
        """Every camera as the console shows it, with the version it is current at (one read)."""
        with self._reading() as db:
            version = int(db.scalar(_CAMERA_VERSION))
            rows = db.execute(
                f"SELECT {_CONSOLE_COLUMNS[self.broker_reachable]} FROM cameras c "
                "LEFT JOIN districts d ON d.district_id = c.district_id ORDER BY c.rowid"
            ).fetchall()
        return version, rows

    def changes_between(self, after: int, upto: int, limit: int) -> list[ConsoleRow] | None:
        """Cameras whose shown state changed in versions (after, upto]; None: more than limit."""
        with self._reading() as db:
            rows = db.execute(
                f"SELECT {_CONSOLE_COLUMNS[self.broker_reachable]} FROM cameras c "
                "LEFT JOIN districts d ON d.district_id = c.district_id "
                "WHERE c.version > ? AND c.version <= ? ORDER BY c.version LIMIT ?",
                [after, upto, limit + 1]).fetchall()
        return None if len(rows) > limit else rows

    def cameras_by_state(self) -> dict[str, int]:
        """Cameras per effective state (reader connection: for other threads)."""
        with self._reading() as db:
            if not self.broker_reachable:
                return {"unknown": int(db.scalar("SELECT COUNT(*) FROM cameras"))}
            rows = db.execute(
                f"SELECT {_ONLINE} AS state, COUNT(*) FROM cameras c LEFT JOIN districts d "
                "ON d.district_id = c.district_id GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    def count_open_sessions(self) -> int:
        with self._reading() as db:
            return int(db.scalar("SELECT COUNT(*) FROM sessions WHERE closed_at IS NULL"))

    # --- connections --------------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[object] = ()) -> Result:
        """One statement on the registry's own connection; RegistryError when it fails."""
        try:
            return self.db.execute(sql, params)
        except DatabaseError as exc:
            raise RegistryError(f"registry read failed: {exc}") from exc

    def _write(self, sql: str, params: Sequence[object] = ()) -> Result:
        """One statement that writes, its own transaction; RegistryError when it fails."""
        try:
            return self.db.execute(sql, params)
        except DatabaseError as exc:
            raise RegistryError(f"registry write failed: {exc}") from exc

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Database]:
        """One consistent read for another thread: SQLite's reader connection (one thread at a
        time), or a snapshot of PostgreSQL's pool."""
        try:
            if not isinstance(self.db, SqliteDatabase):
                with self.db.reading():
                    yield self.db
                return
            with self._reader_lock:
                if self._reader is None:
                    self._reader = SqliteDatabase(self.db.path)
                with self._reader.reading():
                    yield self._reader
        except (DatabaseError, StorageError) as exc:
            raise RegistryError(f"registry read failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction; a failed one is rolled back and becomes RegistryError."""
        try:
            with self.db.transaction():
                yield
        except DatabaseError as exc:
            raise RegistryError(f"registry write failed: {exc}") from exc


def _page_query(columns: str, where: list[str], params: list[object], after: str,
                limit: int) -> tuple[str, list[object]]:
    if after:
        where = [*where, "c.camera_id > ?"]
        params = [*params, after]
    sql = (f"SELECT {columns} FROM cameras c "
           "LEFT JOIN districts d ON d.district_id = c.district_id")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY c.camera_id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return sql, params


def _filters(district_id: str, status: str) -> tuple[list[str], list[object]]:
    where: list[str] = []
    params: list[object] = []
    if district_id:
        where.append("c.district_id = ?")
        params.append(district_id)
    if status == "online":
        where.append("c.status = 'online' AND COALESCE(d.agent_online, 0) = 1")
    elif status == "offline":
        where.append("(c.status != 'online' OR COALESCE(d.agent_online, 0) = 0)")
    return where, params


def _camera(row: tuple[object, ...], distance: float | None = None,
            broker_reachable: bool = True) -> CameraRecord:
    return CameraRecord(
        camera_id=str(row[0]), district_id=str(row[1]), name=str(row[2]), lat=float(row[3]),  # type: ignore[arg-type]
        lon=float(row[4]), kind=str(row[5]), status=str(row[6]), reason=str(row[7]),  # type: ignore[arg-type]
        detail=str(row[8]), viewers=int(row[9]), last_seen=_parse(row[10]),  # type: ignore[arg-type, call-overload]
        agent_online=bool(row[11]), distance_m=distance, broker_reachable=broker_reachable,
    )
