"""The registry of districts, agents and cameras, in SQLite (WAL) through sqlite-utils.

Fed by MQTT status from the agents. "Cameras near a point" uses an R*Tree over camera positions
for a bounding-box prefilter, then exact great-circle distances to rank and cut to the radius.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlite_utils
import structlog

from cloud_core.exceptions import RegistryError
from cloud_core.policy import EARTH_RADIUS_M, distance_m
from cloud_core.timestamps import iso
from runtime.private_files import make_private

log = structlog.get_logger(__name__)



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
        if not self.broker_reachable:
            return "unknown"
        return self.status if self.agent_online else "offline"

    @property
    def effective_reason(self) -> str:
        if not self.broker_reachable:
            return "broker_unreachable"
        return self.reason if self.agent_online else "agent_offline"


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
    last_seen TEXT
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
    last_seen TEXT
);
CREATE INDEX IF NOT EXISTS cameras_district ON cameras(district_id);
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
    basis TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_open ON sessions(closed_at);
"""

_CAMERA_COLUMNS = (
    "c.camera_id, c.district_id, c.name, c.lat, c.lon, c.kind, c.status, c.reason, c.detail, "
    "c.viewers, c.last_seen, COALESCE(d.agent_online, 0)"
)


_SESSION_KEYS = ("session_id", "camera_id", "district_id", "opened_at", "expires_at", "closed_at",
                 "close_reason", "bytes_sent", "duration_seconds", "operator_id", "agency",
                 "incident_id", "breakglass_id", "basis")
_SESSION_COLUMNS = ", ".join(_SESSION_KEYS)


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class Registry:
    """Synchronous and fast (sub-millisecond queries); callers on the event loop call it directly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: Whether the core holds its broker connection; while not, no status is current.
        self.broker_reachable = True
        try:
            if str(path) != ":memory:":
                make_private(Path(path))
            connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db = sqlite_utils.Database(connection)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=5000")
            self.db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise RegistryError(f"cannot open registry {path}: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    # --- writes -----------------------------------------------------------------------------

    def set_agent(self, district_id: str, name: str, agent_id: str, online: bool,
                  software_version: str, seen_at: datetime) -> None:
        with self._transaction():
            self.db.execute(
                """INSERT INTO districts (district_id, name, agent_id, agent_online, software_version, last_seen)
                   VALUES (?, ?, ?, ?, ?, ?)
                   ON CONFLICT(district_id) DO UPDATE SET name=excluded.name, agent_id=excluded.agent_id,
                     agent_online=excluded.agent_online, software_version=excluded.software_version,
                     last_seen=excluded.last_seen""",
                [district_id, name or district_id, agent_id, int(online), software_version, iso(seen_at)],
            )

    def upsert_cameras(self, updates: Iterable[CameraUpdate]) -> int:
        """Write a batch of camera statuses in one transaction; return how many."""
        count = 0
        with self._transaction():
            for u in updates:
                self.db.execute(
                    "INSERT OR IGNORE INTO districts (district_id, name) VALUES (?, ?)",
                    [u.district_id, u.district_id],
                )
                row = self.db.execute(
                    """INSERT INTO cameras (camera_id, district_id, name, lat, lon, kind, status, reason,
                                            detail, viewers, last_seen)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT(camera_id) DO UPDATE SET district_id=excluded.district_id,
                         name=excluded.name, lat=excluded.lat, lon=excluded.lon, kind=excluded.kind,
                         status=excluded.status, reason=excluded.reason, detail=excluded.detail,
                         viewers=excluded.viewers, last_seen=excluded.last_seen
                       WHERE cameras.district_id = excluded.district_id
                       RETURNING rowid""",
                    [u.camera_id, u.district_id, u.name, u.lat, u.lon, u.kind, u.status, u.reason,
                     u.detail, u.viewers, iso(u.seen_at)],
                ).fetchone()
                if row is None:
                    # Another district's camera: a district may only speak for its own.
                    log.warning("camera status for another district's camera ignored",
                                camera=u.camera_id, district=u.district_id)
                    continue
                self.db.execute(
                    "INSERT OR REPLACE INTO cameras_rtree (id, min_lat, max_lat, min_lon, max_lon) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [row[0], u.lat, u.lat, u.lon, u.lon],
                )
                count += 1
        return count

    def touch_cameras(self, district_id: str, seen_at: datetime) -> None:
        with self._transaction():
            self.db.execute("UPDATE cameras SET last_seen=? WHERE district_id=?",
                            [iso(seen_at), district_id])
            self.db.execute("UPDATE districts SET last_seen=? WHERE district_id=?",
                            [iso(seen_at), district_id])

    def record_session(self, session_id: str, camera_id: str, district_id: str,
                       opened_at: datetime, expires_at: datetime, *, operator_id: str = "",
                       agency: str = "", incident_id: str = "", breakglass_id: str = "",
                       basis: str = "") -> None:
        with self._transaction():
            self.db.execute(
                "INSERT INTO sessions (session_id, camera_id, district_id, opened_at, expires_at, "
                "operator_id, agency, incident_id, breakglass_id, basis) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [session_id, camera_id, district_id, iso(opened_at), iso(expires_at),
                 operator_id, agency, incident_id, breakglass_id, basis],
            )

    def end_session(self, session_id: str, closed_at: datetime, reason: str,
                    bytes_sent: int | None = None, duration_seconds: float | None = None) -> bool:
        """Mark a session closed (first reason wins); later reports may still add the figures."""
        with self._transaction():
            cursor = self.db.execute(
                "UPDATE sessions SET closed_at=?, close_reason=? WHERE session_id=? AND closed_at IS NULL",
                [iso(closed_at), reason, session_id],
            )
            if bytes_sent is not None or duration_seconds is not None:
                self.db.execute(
                    "UPDATE sessions SET bytes_sent=COALESCE(?, bytes_sent), "
                    "duration_seconds=COALESCE(?, duration_seconds) WHERE session_id=?",
                    [bytes_sent, duration_seconds, session_id],
                )
            return cursor.rowcount > 0

    def end_district_sessions(self, district_id: str, closed_at: datetime,
                              reason: str) -> list[dict[str, object]]:
        """Close every open session of ``district_id`` (its agent is gone); the rows closed."""
        rows = [r for r in self.open_sessions() if r["district_id"] == district_id]
        return [r for r in rows if self.end_session(str(r["session_id"]), closed_at, reason)]

    def open_sessions(self) -> list[dict[str, object]]:
        rows = self.db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE closed_at IS NULL").fetchall()
        return [dict(zip(_SESSION_KEYS, row, strict=True)) for row in rows]

    # --- reads ------------------------------------------------------------------------------

    def camera(self, camera_id: str) -> CameraRecord | None:
        row = self.db.execute(
            f"SELECT {_CAMERA_COLUMNS} FROM cameras c LEFT JOIN districts d USING (district_id) "
            "WHERE c.camera_id=?", [camera_id],
        ).fetchone()
        return _camera(row, self.broker_reachable) if row else None

    def district(self, district_id: str) -> DistrictRecord | None:
        row = self.db.execute(
            "SELECT district_id, name, agent_id, agent_online, software_version, last_seen "
            "FROM districts WHERE district_id=?", [district_id],
        ).fetchone()
        if row is None:
            return None
        return DistrictRecord(row[0], row[1], row[2], bool(row[3]), row[4], _parse(row[5]))

    def districts(self) -> list[DistrictRecord]:
        rows = self.db.execute(
            "SELECT district_id, name, agent_id, agent_online, software_version, last_seen "
            "FROM districts ORDER BY district_id").fetchall()
        return [DistrictRecord(r[0], r[1], r[2], bool(r[3]), r[4], _parse(r[5])) for r in rows]

    def session(self, session_id: str) -> dict[str, object] | None:
        row = self.db.execute(
            f"SELECT {_SESSION_COLUMNS} FROM sessions WHERE session_id=?", [session_id]).fetchone()
        return dict(zip(_SESSION_KEYS, row, strict=True)) if row else None

    def list_cameras(self, *, district_id: str = "", status: str = "",
                     near: tuple[float, float, float] | None = None,
                     limit: int = 0) -> list[CameraRecord]:
        """Filter by district and effective status; ``near`` = (lat, lon, radius_m) ranks by distance."""
        where: list[str] = []
        params: list[str | float] = []
        if district_id:
            where.append("c.district_id = ?")
            params.append(district_id)
        if status == "online":
            where.append("c.status = 'online' AND COALESCE(d.agent_online, 0) = 1")
        elif status == "offline":
            where.append("(c.status != 'online' OR COALESCE(d.agent_online, 0) = 0)")
        join = ""
        if near is not None:
            lat, lon, radius = near
            dlat = math.degrees(radius / EARTH_RADIUS_M)
            dlon = dlat / max(math.cos(math.radians(lat)), 1e-6)
            join = "JOIN cameras_rtree r ON r.id = c.rowid"
            where.append("r.max_lat >= ? AND r.min_lat <= ? AND r.max_lon >= ? AND r.min_lon <= ?")
            params += [lat - dlat, lat + dlat, lon - dlon, lon + dlon]
        sql = (f"SELECT {_CAMERA_COLUMNS} FROM cameras c {join} "
               "LEFT JOIN districts d ON d.district_id = c.district_id")
        if where:
            sql += " WHERE " + " AND ".join(where)
        if near is None:
            sql += " ORDER BY c.camera_id"
            if limit:
                sql += f" LIMIT {int(limit)}"
        cameras = [_camera(row, self.broker_reachable)
                   for row in self.db.execute(sql, params).fetchall()]
        if near is None:
            return cameras
        lat, lon, radius = near
        ranked = []
        for camera in cameras:
            d = distance_m(lat, lon, camera.lat, camera.lon)
            if d <= radius:
                ranked.append(CameraRecord(**{**camera.__dict__, "distance_m": d}))
        ranked.sort(key=lambda c: (c.distance_m, c.camera_id))
        return ranked[:limit] if limit else ranked

    def _transaction(self) -> _Transaction:
        return _Transaction(self.db.conn)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on error; sqlite3 errors become RegistryError."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise RegistryError(f"registry busy: {exc}") from exc

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> None:
        if exc_type is None:
            try:
                self._conn.execute("COMMIT")
                return
            except sqlite3.Error as commit_error:
                self._conn.execute("ROLLBACK")
                raise RegistryError(f"registry write failed: {commit_error}") from commit_error
        self._conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise RegistryError(f"registry write failed: {exc}") from exc


def _camera(row: tuple[object, ...], broker_reachable: bool = True) -> CameraRecord:
    return CameraRecord(
        camera_id=str(row[0]), district_id=str(row[1]), name=str(row[2]), lat=float(row[3]),  # type: ignore[arg-type]
        lon=float(row[4]), kind=str(row[5]), status=str(row[6]), reason=str(row[7]),  # type: ignore[arg-type]
        detail=str(row[8]), viewers=int(row[9]), last_seen=_parse(row[10]),  # type: ignore[arg-type, call-overload]
        agent_online=bool(row[11]), broker_reachable=broker_reachable,
    )
