"""Incidents that move and incidents that belong together: moves, links and hand-offs.

A move (from an operator, a CAD feed or a wearable feed) appends a position to the incident's
trail; its grant then reaches the cameras near the latest positions (as the service's policy
says), whichever district they are in, with no new report. Sessions on cameras that fell out of
reach end at once (the sweeper runs after every move). A hand-off opens a linked incident of
another service (a wearable SOS to 112) that follows the original's moves; both agencies see
both incidents. Every move, link and hand-off is on the audit record before it takes effect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import structlog

from cloud_core.access import denials
from cloud_core.access.caller import Caller
from cloud_core.access.grant_sweeper import GrantSweeper
from cloud_core.access.incident_desk import IncidentDesk, IncidentReport
from cloud_core.access.recorder import AuditRecorder
from cloud_core.audit import AuditAction, AuditEntry
from cloud_core.exceptions import IncidentNotFound, InvalidRequest
from cloud_core.incident_trail import (
    HAND_OFF,
    LINK,
    MAX_REASON_CHARS,
    bounded_text,
    check_move,
)
from cloud_core.incidents import IncidentStore, StoredIncident
from cloud_core.policy import REPORT_ROLES, VIEW_ROLES, Policy, Role, TrailPoint, distance_m

log = structlog.get_logger(__name__)


class TrailDesk:
    """Moves, links and hands off incidents for callers of the agencies they admit."""

    def __init__(self, *, incidents: IncidentStore, policy: Policy, recorder: AuditRecorder,
                 sweeper: GrantSweeper, incident_desk: IncidentDesk,
                 clock: Callable[[], datetime]) -> None:
        self._incidents = incidents
        self._policy = policy
        self._recorder = recorder
        self._sweeper = sweeper
        self._desk = incident_desk
        self._clock = clock

    async def move(self, caller: Caller, incident_id: str, lat: float, lon: float, *,
                   at: datetime | None = None, source: str = "operator") -> IncidentReport:
        """Append a position; the grant follows it; incidents handed off from this one too."""
        stored = await self._admitted(caller, incident_id, AuditAction.INCIDENT_MOVE,
                                      REPORT_ROLES)
        now = self._clock()
        try:
            point = TrailPoint(lat, lon, at or now, source)
            check_move(_latest(stored), point, now)
        except (TypeError, ValueError) as exc:
            raise InvalidRequest(str(exc)) from exc
        await self._record_move(caller, stored, point)
        for follower in self._followers(stored):
            try:
                check_move(_latest(follower), point, now)
            except ValueError as exc:
                log.info("hand-off target not moved", incident=follower.incident.incident_id,
                         why=str(exc))
                continue
            await self._record_move(caller, follower, point)
        await self._sweeper.sweep()
        return self._desk.report_of(self._get(incident_id))

    async def link(self, caller: Caller, incident_id: str, other_id: str,
                   reason: str) -> tuple[StoredIncident, StoredIncident]:
        """Link two incidents the caller may see (once); both agencies then see both."""
        stored = await self._admitted(caller, incident_id, AuditAction.INCIDENT_LINK)
        other = self._incidents.get(other_id)
        if other is None or not self._desk.visible(caller, other):
            raise IncidentNotFound(other_id)
        if other_id == incident_id:
            raise InvalidRequest("an incident cannot be linked to itself")
        written = _reason(reason)
        if self._incidents.trail.link_between(incident_id, other_id) is None:
            await self._recorder.record(_link_entry(caller, stored, other_id, LINK, written))
            self._incidents.trail.add_link(incident_id, other_id, LINK, written, self._clock(),
                                           caller.operator.operator_id)
        return self._get(incident_id), self._get(other_id)

    async def hand_off(self, caller: Caller, incident_id: str, reason: str, *,
                       incident_type: str | None = None,
                       service: str | None = None) -> IncidentReport:
        """Open the linked incident of the service the policy hands this one off to (once)."""
        stored = await self._admitted(caller, incident_id, AuditAction.INCIDENT_LINK)
        rules = self._policy.services[stored.incident.service]
        if rules.hand_off_to is None or rules.hand_off_type is None:
            raise InvalidRequest(f"{rules.title} incidents are not handed off to another service")
        if service and service != rules.hand_off_to:
            raise InvalidRequest(f"{rules.title} incidents are handed off to "
                                 f"{rules.hand_off_to}, not {service}")
        written = _reason(reason)
        for earlier in self._followers(stored):
            if earlier.incident.service == rules.hand_off_to:
                return replace(self._desk.report_of(earlier), existing=True)
        incident = stored.incident
        opened = await self._desk.open(
            caller, incident_type=incident_type or rules.hand_off_type, lat=incident.lat,
            lon=incident.lon, radius_m=None, occurred_at=incident.occurred_at,
            external_ref="", legal_basis=None, service=rules.hand_off_to, may_report=True,
            details={"handed_off_from": incident_id})
        await self._recorder.record(_link_entry(caller, stored, opened.incident_id, HAND_OFF,
                                                written))
        self._incidents.trail.add_link(incident_id, opened.incident_id, HAND_OFF, written,
                                       self._clock(), caller.operator.operator_id)
        log.info("incident handed off", incident=incident_id, to=opened.incident_id,
                 service=opened.service)
        return self._desk.report_of(self._get(opened.incident_id))

    async def _admitted(self, caller: Caller, incident_id: str, action: AuditAction,
                        roles: frozenset[Role] = VIEW_ROLES) -> StoredIncident:
        """The open incident, if the caller has one of ``roles`` in an agency it admits."""
        stored = self._incidents.get(incident_id)
        if stored is None or not self._desk.visible(caller, stored):
            raise IncidentNotFound(incident_id)
        operator = caller.operator
        if operator.role not in roles or operator.agency not in stored.incident.agencies:
            await self._recorder.refuse(
                caller, action, denials.may_not_change(operator.operator_id, incident_id),
                incident_id=incident_id)
        now = self._clock()
        if stored.incident.is_closed(now) or now >= stored.incident.expires_at:
            raise InvalidRequest(f"incident {incident_id} is no longer open")
        return stored

    def _followers(self, stored: StoredIncident) -> list[StoredIncident]:
        """Open incidents this one handed off to."""
        now = self._clock()
        followers = []
        for link in self._incidents.trail.links(stored.incident.incident_id):
            if link.kind == HAND_OFF and link.outgoing:
                other = self._incidents.get(link.other_id)
                if other is not None and not other.incident.is_closed(now) \
                        and now < other.incident.expires_at:
                    followers.append(other)
        return followers

    async def _record_move(self, caller: Caller, stored: StoredIncident,
                           point: TrailPoint) -> None:
        incident = stored.incident
        operator = caller.operator
        await self._recorder.record(AuditEntry(
            action=AuditAction.INCIDENT_MOVE, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            incident_id=incident.incident_id, purpose=incident.purpose,
            legal_basis=incident.legal_basis, period_start=point.at,
            details={"lat": point.lat, "lon": point.lon, "source": point.source,
                     "from_lat": incident.lat, "from_lon": incident.lon,
                     "moved_m": round(distance_m(incident.lat, incident.lon, point.lat,
                                                 point.lon), 1)}))
        self._incidents.trail.add_position(incident.incident_id, point)
        log.info("incident moved", incident=incident.incident_id, source=point.source,
                 operator=operator.operator_id)

    def _get(self, incident_id: str) -> StoredIncident:
        stored = self._incidents.get(incident_id)
        if stored is None:
            raise IncidentNotFound(incident_id)
        return stored


def _latest(stored: StoredIncident) -> TrailPoint:
    incident = stored.incident
    if incident.trail:
        return incident.trail[-1]
    return TrailPoint(incident.lat, incident.lon, incident.opened_at, "report")


def _reason(reason: str) -> str:
    try:
        return bounded_text("reason", reason, MAX_REASON_CHARS, required=True)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc


def _link_entry(caller: Caller, stored: StoredIncident, other_id: str, kind: str,
                reason: str) -> AuditEntry:
    operator = caller.operator
    return AuditEntry(
        action=AuditAction.INCIDENT_LINK, operator_id=operator.operator_id,
        agency=operator.agency, source_address=caller.source_address or None,
        incident_id=stored.incident.incident_id, reason=reason,
        purpose=stored.incident.purpose, legal_basis=stored.incident.legal_basis,
        details={"other_incident_id": other_id, "kind": kind})
