"""The wearable feed: SOS, safe-zone exits and positions from the carriers' platform.

A carrier's platform is a system client (role ``feed`` of the ``vulnerable-support`` agency),
not a person. An SOS or a geofence exit opens a vulnerable-person-support incident at the
wearer's position (or, if the subject already has an open one, moves it); a position moves the
subject's open incident, so the protection centre's cameras follow the wearer. A position for a
subject without an open incident is refused and nothing about it is kept.

The subject is a pseudonymous id from the carrier (``[A-Za-z0-9_-]``, at most 64): no name, no
phone number, nothing that names the child or patient is ever stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog

from cloud_core.access import AccessService, Caller
from cloud_core.access.incident_desk import IncidentReport
from cloud_core.exceptions import AccessDenied, IncidentNotFound, InvalidRequest
from cloud_core.policy import Role
from cloud_core.storage.database import Database
from cloud_core.timestamps import iso

log = structlog.get_logger(__name__)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS wearable_subjects (
    agency TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (agency, subject_id)
);
"""

EVENT_KINDS: Final = ("sos", "geofence-exit", "position")
SUBJECT_KINDS: Final = ("child", "dementia")
_SUBJECT_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INCIDENT_TYPES: Final = {("sos", "child"): "wearable-sos", ("sos", "dementia"): "wearable-sos",
                          ("geofence-exit", "child"): "geofence-exit-child",
                          ("geofence-exit", "dementia"): "geofence-exit-dementia"}


@dataclass(frozen=True)
class WearableEvent:
    """One event as the carrier sends it, validated."""

    kind: str
    subject_id: str
    lat: float
    lon: float
    subject_kind: str = ""
    at: datetime | None = None
    event_id: str = ""

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> WearableEvent:
        """Validate a JSON object; InvalidRequest naming the first bad field."""
        kind = body.get("event")
        if kind not in EVENT_KINDS:
            raise InvalidRequest(f"event must be one of {', '.join(EVENT_KINDS)}, got {kind!r}")
        subject = body.get("subject_id")
        if not isinstance(subject, str) or not _SUBJECT_RE.fullmatch(subject):
            raise InvalidRequest("subject_id must be 1 to 64 letters, digits, '-' or '_' "
                                 "(a pseudonymous id, never a name)")
        subject_kind = body.get("subject_kind", "")
        if kind != "position" and subject_kind not in SUBJECT_KINDS:
            raise InvalidRequest(f"subject_kind must be one of {', '.join(SUBJECT_KINDS)}")
        lat, lon = body.get("lat"), body.get("lon")
        for name, value in (("lat", lat), ("lon", lon)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidRequest(f"{name} must be a number, got {value!r}")
        event_id = body.get("event_id", "")
        if not isinstance(event_id, str) or len(event_id) > 64:
            raise InvalidRequest("event_id must be a string of at most 64 characters")
        return cls(str(kind), subject, float(lat), float(lon),  # type: ignore[arg-type]
                   str(subject_kind or ""), _moment(body.get("at")), event_id)


def _moment(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 40:
        raise InvalidRequest("at must be an ISO 8601 time with a zone")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InvalidRequest(f"at must be an ISO 8601 time, got {value!r}") from exc
    if moment.tzinfo is None:
        raise InvalidRequest("at must carry a time zone (e.g. 2026-05-01T09:00:00Z)")
    return moment


@dataclass(frozen=True)
class FeedOutcome:
    incident: IncidentReport
    opened: bool          # a new incident was opened for this event


class WearableSubjects:
    """Which incident each carrier's subject has (the latest one opened for it)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._db.schema(SCHEMA)

    def bind(self, agency: str, subject_id: str, subject_kind: str, incident_id: str,
             since: datetime) -> None:
        """Make ``incident_id`` the subject's incident, replacing the one it had."""
        self._db.execute(
            "INSERT INTO wearable_subjects (agency, subject_id, subject_kind, incident_id, since) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (agency, subject_id) DO UPDATE SET "
            "subject_kind = excluded.subject_kind, incident_id = excluded.incident_id, "
            "since = excluded.since",
            [agency, subject_id, subject_kind, incident_id, iso(since)])

    def incident_of(self, agency: str, subject_id: str) -> str | None:
        """The subject's latest incident, open or not; None if it never had one."""
        row = self._db.execute("SELECT incident_id FROM wearable_subjects WHERE agency=? AND "
                               "subject_id=?", [agency, subject_id]).fetchone()
        return str(row[0]) if row is not None else None


class WearableFeed:
    """Turns carriers' events into incidents, moves and nothing else."""

    def __init__(self, access: AccessService, db: Database) -> None:
        self._access = access
        self.subjects = WearableSubjects(db)

    async def ingest(self, caller: Caller, event: WearableEvent) -> FeedOutcome:
        """Apply ``event`` for the feed client ``caller``."""
        if caller.operator.role is not Role.FEED:
            raise AccessDenied(f"only a feed client sends wearable events; "
                               f"{caller.operator.operator_id} has role {caller.operator.role}")
        agency = caller.operator.agency
        current = self._open_incident(caller, event.subject_id)
        if current is not None:
            report = self._access.get_incident(caller, current)
            where = report.incident.incident
            if (where.lat, where.lon) != (event.lat, event.lon):  # a retry or a still wearer: no move
                report = await self._access.move_incident(caller, current, event.lat, event.lon,
                                                          at=event.at, source="wearable")
            return FeedOutcome(report, opened=False)
        if event.kind == "position":
            raise IncidentNotFound(f"subject {event.subject_id} (no open incident: a position "
                                   "is only taken while an SOS or exit is open)")
        report = await self._access.report_incident(
            caller, incident_type=_INCIDENT_TYPES[(event.kind, event.subject_kind)],
            lat=event.lat, lon=event.lon, occurred_at=event.at,
            external_ref=f"wearable:{event.event_id}" if event.event_id else "")
        incident_id = report.incident.incident.incident_id
        self.subjects.bind(agency, event.subject_id, event.subject_kind, incident_id,
                           report.incident.incident.opened_at)
        log.info("wearable alert", kind=event.kind, subject=event.subject_id,
                 incident=incident_id, existing=report.existing)
        return FeedOutcome(report, opened=not report.existing)

    def _open_incident(self, caller: Caller, subject_id: str) -> str | None:
        """The subject's incident if it is still open."""
        incident_id = self.subjects.incident_of(caller.operator.agency, subject_id)
        if incident_id is None:
            return None
        stored = self._access.incidents.get(incident_id)
        now = datetime.now(stored.incident.opened_at.tzinfo) if stored else None
        if stored is None or now is None or stored.incident.is_closed(now) \
                or now >= stored.incident.expires_at:
            return None
        return incident_id
