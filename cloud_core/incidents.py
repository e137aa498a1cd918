"""Incidents, break-glass windows and nearby facilities, stored beside the registry.

Rows mirror ``cloud_core.policy``'s frozen ``Incident`` and ``BreakGlass``; the policy decides,
this module only keeps them.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from cloud_core.dispatch import DispatchStore
from cloud_core.exceptions import ConfigError, RegistryError
from cloud_core.geo_area import GeoArea
from cloud_core.incident_trail import LATEST_POSITIONS_JOIN, TrailStore, trail_points
from cloud_core.policy import BreakGlass, Incident, TrailPoint, distance_m
from cloud_core.storage.database import Database, DatabaseError
from cloud_core.timestamps import iso

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    incident_id TEXT PRIMARY KEY,
    incident_type TEXT NOT NULL,
    service TEXT NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    radius_m REAL NOT NULL,
    agencies TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    closed_at TEXT,
    close_reason TEXT,
    legal_basis TEXT NOT NULL,
    purpose TEXT NOT NULL,
    occurred_at TEXT,
    external_ref TEXT NOT NULL DEFAULT '',
    reported_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents(closed_at, expires_at);
CREATE TABLE IF NOT EXISTS incident_areas (
    incident_id TEXT PRIMARY KEY,
    geojson TEXT,
    district_ids TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS break_glass (
    breakglass_id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    camera_ids TEXT NOT NULL,
    district_ids TEXT NOT NULL,
    started_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    stopped_at TEXT
);
CREATE TABLE IF NOT EXISTS facilities (
    facility_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""


@dataclass(frozen=True)
class StoredIncident:
    incident: Incident
    reported_by: str
    close_reason: str


@dataclass(frozen=True)
class Facility:
    facility_id: str
    kind: str
    name: str
    lat: float
    lon: float
    detail: str
    distance_m: float = 0.0


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


class IncidentStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._db.schema(SCHEMA)
        self.trail = TrailStore(db)
        self.dispatch = DispatchStore(db)
        self._areas: dict[str, GeoArea | None] = {}

    # --- incidents --------------------------------------------------------------------------

    def add(self, incident: Incident, reported_by: str) -> None:
        """Store a new incident with its area and first trail position, in one transaction (no
        replica ever reads an incident without them)."""
        i = incident
        first = TrailPoint(i.lat, i.lon, i.occurred_at or i.opened_at, "report")
        try:
            with self._db.transaction():
                self._db.execute(
                    "INSERT INTO incidents (incident_id, incident_type, service, lat, lon, "
                    "radius_m, agencies, opened_at, expires_at, closed_at, legal_basis, purpose, "
                    "occurred_at, external_ref, reported_by) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [i.incident_id, i.incident_type, i.service, i.lat, i.lon, i.radius_m,
                     json.dumps(sorted(i.agencies)), iso(i.opened_at), iso(i.expires_at),
                     iso(i.closed_at), i.legal_basis, i.purpose, iso(i.occurred_at),
                     i.external_ref, reported_by])
                if i.area is not None:
                    polygon = i.area.geojson()
                    self._db.execute(
                        "INSERT INTO incident_areas (incident_id, geojson, district_ids) "
                        "VALUES (?, ?, ?)",
                        [i.incident_id, json.dumps(polygon) if polygon else None,
                         json.dumps(sorted(i.area.district_ids))])
                self.trail.add_position(i.incident_id, first)
        except DatabaseError as exc:
            raise RegistryError(f"cannot store incident: {exc}") from exc

    def extend(self, incident_id: str, expires_at: datetime) -> bool:
        """Move an open incident's end to ``expires_at``."""
        cursor = self._db.execute(
            "UPDATE incidents SET expires_at=? WHERE incident_id=? AND closed_at IS NULL",
            [iso(expires_at), incident_id])
        return cursor.rowcount > 0

    def close(self, incident_id: str, closed_at: datetime, reason: str) -> bool:
        cursor = self._db.execute(
            "UPDATE incidents SET closed_at=?, close_reason=? WHERE incident_id=? AND closed_at IS NULL",
            [iso(closed_at), reason, incident_id])
        return cursor.rowcount > 0

    def get(self, incident_id: str) -> StoredIncident | None:
        # The row and its trail in one statement (one round trip, one snapshot).
        rows = self._db.execute(
            f"SELECT {_QUALIFIED_COLUMNS}, p.lat, p.lon, p.at, p.source FROM incidents i "
            f"{LATEST_POSITIONS_JOIN} WHERE i.incident_id=? ORDER BY p.seq",
            [incident_id]).fetchall()
        if not rows:
            return None
        stored = _incident(rows[0])
        width = len(_QUALIFIED_COLUMNS.split(","))
        trail = trail_points(row[width:] for row in rows if row[width] is not None)
        return StoredIncident(replace(stored.incident, trail=trail, area=self._area(incident_id)),
                              stored.reported_by, stored.close_reason)

    def _area(self, incident_id: str) -> GeoArea | None:
        """The incident's declared area (validated when it was reported; never changes)."""
        if incident_id in self._areas:
            return self._areas[incident_id]
        row = self._db.execute("SELECT geojson, district_ids FROM incident_areas "
                               "WHERE incident_id=?", [incident_id]).fetchone()
        area = None
        if row is not None:
            coordinates = json.loads(row[0])["coordinates"] if row[0] else []
            area = GeoArea(tuple(tuple((float(p[0]), float(p[1])) for p in ring)
                                 for ring in coordinates), frozenset(json.loads(str(row[1]))))
        if len(self._areas) > 10_000:
            self._areas.clear()
        self._areas[incident_id] = area
        return area

    def list_all(self, *, include_closed: bool = False, now: datetime | None = None) -> list[StoredIncident]:
        sql = f"SELECT {_COLUMNS} FROM incidents"
        params: list[object] = []
        if not include_closed:
            sql += " WHERE closed_at IS NULL AND expires_at > ?"
            params.append(iso(now or datetime.now(UTC)))
        sql += " ORDER BY opened_at DESC"
        return [_incident(r) for r in self._db.execute(sql, params).fetchall()]

    # --- break-glass ------------------------------------------------------------------------

    def add_break_glass(self, window: BreakGlass) -> None:
        self._db.execute(
            "INSERT INTO break_glass (breakglass_id, operator_id, reason, camera_ids, district_ids, "
            "started_at, expires_at, stopped_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [window.breakglass_id, window.operator_id, window.reason,
             json.dumps(sorted(window.camera_ids)), json.dumps(sorted(window.district_ids)),
             iso(window.started_at), iso(window.expires_at), iso(window.stopped_at)])

    def stop_break_glass(self, breakglass_id: str, stopped_at: datetime) -> bool:
        cursor = self._db.execute(
            "UPDATE break_glass SET stopped_at=? WHERE breakglass_id=? AND stopped_at IS NULL",
            [iso(stopped_at), breakglass_id])
        return cursor.rowcount > 0

    def break_glass(self, breakglass_id: str) -> BreakGlass | None:
        row = self._db.execute(
            "SELECT breakglass_id, operator_id, reason, camera_ids, district_ids, started_at, "
            "expires_at, stopped_at FROM break_glass WHERE breakglass_id=?", [breakglass_id]).fetchone()
        return _break_glass(row) if row else None

    def break_glass_windows(self, since: datetime | None = None,
                            until: datetime | None = None) -> list[BreakGlass]:
        sql = ("SELECT breakglass_id, operator_id, reason, camera_ids, district_ids, started_at, "
               "expires_at, stopped_at FROM break_glass WHERE 1=1")
        params: list[object] = []
        if since:
            sql += " AND started_at >= ?"
            params.append(iso(since))
        if until:
            sql += " AND started_at < ?"
            params.append(iso(until))
        return [_break_glass(r) for r in self._db.execute(sql + " ORDER BY started_at", params)]

    # --- facilities -------------------------------------------------------------------------

    def load_facilities(self, path: Path) -> int:
        """Replace the facility list with ``path`` (CSV); all-or-nothing, errors name the line."""
        rows = []
        try:
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                missing = {"facility_id", "kind", "name", "lat", "lon"} - set(reader.fieldnames or [])
                if missing:
                    raise ConfigError(str(path), f"missing column(s): {', '.join(sorted(missing))}")
                for line, row in enumerate(reader, start=2):
                    try:
                        lat, lon = float(row["lat"]), float(row["lon"])
                    except ValueError as exc:
                        raise ConfigError(str(path), f"line {line}: bad coordinate") from exc
                    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
                        raise ConfigError(str(path), f"line {line}: coordinate out of range")
                    if row["kind"] not in ("parking", "hazardous"):
                        raise ConfigError(str(path), f"line {line}: kind must be parking or hazardous")
                    rows.append([row["facility_id"], row["kind"], row["name"], lat, lon,
                                 row.get("detail") or ""])
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read: {exc.strerror}") from exc
        with self._db.transaction():
            self._db.execute("DELETE FROM facilities")
            self._db.executemany("INSERT INTO facilities (facility_id, kind, name, lat, lon, "
                                 "detail) VALUES (?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def facilities_near(self, lat: float, lon: float, radius_m: float) -> list[Facility]:
        found = []
        for row in self._db.execute("SELECT facility_id, kind, name, lat, lon, detail FROM facilities"):
            d = distance_m(lat, lon, row[3], row[4])
            if d <= radius_m:
                found.append(Facility(row[0], row[1], row[2], row[3], row[4], row[5], d))
        return sorted(found, key=lambda f: f.distance_m)


_COLUMNS = ("incident_id, incident_type, service, lat, lon, radius_m, agencies, opened_at, expires_at, "
            "closed_at, legal_basis, purpose, occurred_at, external_ref, reported_by, close_reason")

_QUALIFIED_COLUMNS = ", ".join(f"i.{column.strip()}" for column in _COLUMNS.split(","))


def _incident(row: tuple[object, ...]) -> StoredIncident:
    incident = Incident(
        incident_id=str(row[0]), incident_type=str(row[1]), service=str(row[2]),
        lat=float(row[3]), lon=float(row[4]), radius_m=float(row[5]),  # type: ignore[arg-type]
        agencies=frozenset(json.loads(str(row[6]))), opened_at=_time(str(row[7])),  # type: ignore[arg-type]
        expires_at=_time(str(row[8])), closed_at=_time(row[9]),  # type: ignore[arg-type]
        legal_basis=str(row[10]), purpose=str(row[11]), occurred_at=_time(row[12]),  # type: ignore[arg-type]
        external_ref=str(row[13]),
    )
    return StoredIncident(incident, str(row[14]), str(row[15] or ""))


def _break_glass(row: tuple[object, ...]) -> BreakGlass:
    return BreakGlass(
        breakglass_id=str(row[0]), operator_id=str(row[1]), reason=str(row[2]),
        camera_ids=frozenset(json.loads(str(row[3]))), district_ids=frozenset(json.loads(str(row[4]))),
        started_at=_time(str(row[5])), expires_at=_time(str(row[6])), stopped_at=_time(row[7]),  # type: ignore[arg-type]
    )
