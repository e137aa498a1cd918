"""Moving and linked incidents, stored: each incident's trail of positions, the links between
incidents (an SOS handed off to 112), and each agency's external references, so that a CAD system
retrying a report finds the incident it already opened instead of opening a second one.

The checks a new position must pass live here too (:func:`check_move`): a point on the globe, not
in the future, not older than the latest, and no faster than any vehicle on a city street.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cloud_core.exceptions import RegistryError
from cloud_core.policy import TrailPoint, distance_m
from cloud_core.storage.database import Database, DatabaseError, IntegrityError
from cloud_core.timestamps import iso

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS incident_positions (
    incident_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lat REAL NOT NULL,
    lon REAL NOT NULL,
    at TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (incident_id, seq)
);
CREATE TABLE IF NOT EXISTS incident_links (
    incident_id TEXT NOT NULL,
    other_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    linked_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, other_id)
);
CREATE TABLE IF NOT EXISTS incident_refs (
    agency TEXT NOT NULL,
    external_ref TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    PRIMARY KEY (agency, external_ref)
);
"""

MOVE_SOURCES: Final = ("operator", "cad", "wearable")
"""Who may report a position: an operator at a console, a 112/119 CAD feed, a wearable feed."""

MAX_SPEED_MPS: Final = 70.0
"""252 km/h: faster than any car chase on a city street; a faster jump is a bad position."""

JITTER_M: Final = 150.0
"""Position error allowed on top of the speed limit (GPS and CAD geocoding are not exact)."""

TRAIL_KEPT: Final = 200
"""How many of an incident's latest positions are read back (the grant needs at most 100)."""

TRAIL_LOCK: Final = 0x5AFE0014
"""PostgreSQL advisory lock class of incident trails (the key within it: the incident id's hash)."""

SEQ_ATTEMPTS: Final = 5
"""Tries to append a position whose ``seq`` another writer took at the same moment."""

MAX_REF_CHARS: Final = 64
MAX_REASON_CHARS: Final = 500

HAND_OFF: Final = "hand-off"
LINK: Final = "link"


@dataclass(frozen=True)
class IncidentLink:
    """A link as one of its two incidents sees it: the other incident, and which way it points."""

    other_id: str
    kind: str               # "hand-off" (from → to) or "link"
    outgoing: bool          # True when this incident handed off (or linked) to the other
    reason: str
    at: datetime
    linked_by: str


def check_move(previous: TrailPoint, new: TrailPoint, now: datetime) -> None:
    """ValueError naming the problem unless ``new`` may follow ``previous``."""
    if new.source not in MOVE_SOURCES:
        raise ValueError(f"source must be one of {', '.join(MOVE_SOURCES)}, not {new.source!r}")
    if new.at > now + timedelta(seconds=30):
        raise ValueError(f"position time {iso(new.at)} is in the future")
    if new.at < previous.at:
        raise ValueError(f"position time {iso(new.at)} is older than the latest position's "
                         f"{iso(previous.at)}")
    seconds = (new.at - previous.at).total_seconds()
    jump = distance_m(previous.lat, previous.lon, new.lat, new.lon)
    if jump > JITTER_M + MAX_SPEED_MPS * seconds:
        speed = jump / max(seconds, 1.0) * 3.6
        raise ValueError(
            f"a jump of {jump / 1000:.1f} km in {seconds:.0f} s ({speed:.0f} km/h) is faster "
            f"than {MAX_SPEED_MPS * 3.6:.0f} km/h; the position is refused")


def bounded_text(name: str, value: str, limit: int, *, required: bool = False) -> str:
    """``value`` stripped; ValueError when longer than ``limit`` characters (or blank if required)."""
    text = value.strip()
    if len(text) > limit:
        raise ValueError(f"{name} is {len(text)} characters long; at most {limit} are allowed")
    if required and not text:
        raise ValueError(f"{name} is required")
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"{name} must not contain control characters")
    return text


class TrailStore:
    """Positions, links and external references beside the incidents table."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._db.schema(SCHEMA)

    def add_position(self, incident_id: str, point: TrailPoint) -> None:
        """Append ``point`` to the trail and make it the incident's latest position, atomically.

        The next ``seq`` is read inside the write: SQLite's write lock serialises it; on
        PostgreSQL a transaction-level advisory lock on the incident queues every other
        replica's position for it behind this one. A collision all the same (a writer that
        took no lock) is retried."""
        for attempt in range(1, SEQ_ATTEMPTS + 1):
            try:
                with self._db.transaction():
                    if self._db.dialect == "postgres":
                        self._db.execute(
                            "SELECT pg_advisory_xact_lock(CAST(? AS INTEGER), hashtext(?))",
                            [TRAIL_LOCK, incident_id])
                    self._db.execute("UPDATE incidents SET lat=?, lon=? WHERE incident_id=?",
                                     [point.lat, point.lon, incident_id])
                    self._db.execute(
                        "INSERT INTO incident_positions (incident_id, seq, lat, lon, at, source) "
                        "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ? FROM incident_positions "
                        "WHERE incident_id=?",
                        [incident_id, point.lat, point.lon, iso(point.at), point.source,
                         incident_id])
                return
            except IntegrityError as exc:
                if attempt == SEQ_ATTEMPTS:
                    raise RegistryError(f"cannot store the incident's position: {exc}") from exc
            except DatabaseError as exc:
                raise RegistryError(f"cannot store the incident's position: {exc}") from exc

    def positions(self, incident_id: str, limit: int = TRAIL_KEPT) -> tuple[TrailPoint, ...]:
        """The latest ``limit`` positions, oldest first."""
        rows = self._db.execute(
            "SELECT lat, lon, at, source FROM incident_positions WHERE incident_id=? "
            "ORDER BY seq DESC LIMIT ?", [incident_id, limit]).fetchall()
        return trail_points(reversed(rows))

    def add_link(self, incident_id: str, other_id: str, kind: str, reason: str, at: datetime,
                 linked_by: str) -> bool:
        """Link two incidents (once); False when they were linked already, either way round."""
        if self.link_between(incident_id, other_id) is not None:
            return False
        cursor = self._db.execute(
            "INSERT INTO incident_links (incident_id, other_id, kind, reason, at, linked_by) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (incident_id, other_id) DO NOTHING",
            [incident_id, other_id, kind, reason, iso(at), linked_by])
        return cursor.rowcount > 0

    def link_between(self, incident_id: str, other_id: str) -> IncidentLink | None:
        return next((link for link in self.links(incident_id) if link.other_id == other_id), None)

    def links(self, incident_id: str) -> list[IncidentLink]:
        """Every link of the incident, oldest first, both directions."""
        rows = self._db.execute(
            "SELECT other_id, kind, 1, reason, at, linked_by FROM incident_links "
            "WHERE incident_id=? UNION ALL "
            "SELECT incident_id, kind, 0, reason, at, linked_by FROM incident_links "
            "WHERE other_id=? ORDER BY 5", [incident_id, incident_id]).fetchall()
        return [IncidentLink(str(r[0]), str(r[1]), bool(r[2]), str(r[3]),
                             datetime.fromisoformat(str(r[4])), str(r[5])) for r in rows]

    def claim_ref(self, agency: str, external_ref: str, incident_id: str) -> str:
        """Make ``incident_id`` the agency's incident for ``external_ref`` unless one is already;
        return the incident that holds the reference (another replica's, if it was first)."""
        self._db.execute("INSERT INTO incident_refs (agency, external_ref, incident_id) "
                         "VALUES (?, ?, ?) ON CONFLICT (agency, external_ref) DO NOTHING",
                         [agency, external_ref, incident_id])
        holder = self.incident_for_ref(agency, external_ref)
        if holder is None:
            raise RegistryError(f"external reference {external_ref!r} of {agency} was not kept")
        return holder

    def incident_for_ref(self, agency: str, external_ref: str) -> str | None:
        row = self._db.execute("SELECT incident_id FROM incident_refs WHERE agency=? AND "
                               "external_ref=?", [agency, external_ref]).fetchone()
        return str(row[0]) if row else None


LATEST_POSITIONS_JOIN: Final = (
    # The trail's latest TRAIL_KEPT points beside the incident's row, in one statement: seq
    # counts each incident's positions from 1 with no gaps (add_position), so the latest are
    # those past the highest seq less the count kept.
    "LEFT JOIN incident_positions p ON p.incident_id = i.incident_id AND p.seq > "
    "(SELECT COALESCE(MAX(seq), 0) FROM incident_positions WHERE incident_id = i.incident_id) "
    f"- {TRAIL_KEPT}")
"""SQL joining ``incidents i`` to its latest positions ``p`` (p.lat, p.lon, p.at, p.source;
all NULL for an incident with none); ORDER BY p.seq for the oldest first."""


def trail_points(rows: Iterable[Sequence[object]]) -> tuple[TrailPoint, ...]:
    """Positions from rows of (lat, lon, at, source), in the rows' order."""
    return tuple(TrailPoint(float(r[0]), float(r[1]), datetime.fromisoformat(str(r[2])),  # type: ignore[arg-type]
                            str(r[3])) for r in rows)
