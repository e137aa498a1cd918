"""Incidents as callers see them: report one (opening its grant), look one up, list, close.

An incident is visible to the agencies it admits, to whoever reported it, and to auditors and
admins; to anyone else it does not exist. Closing one ends every session it backs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import structlog

from cloud_core.access import denials
from cloud_core.access.caller import Caller
from cloud_core.access.grant_sweeper import GrantSweeper
from cloud_core.access.recorder import AuditRecorder
from cloud_core.audit import AuditAction, AuditEntry
from cloud_core.exceptions import AccessDenied, IncidentNotFound, InvalidRequest, PolicyError
from cloud_core.geo_area import AreaError, GeoArea, parse_area
from cloud_core.incident_trail import MAX_REASON_CHARS, MAX_REF_CHARS, bounded_text
from cloud_core.incidents import Facility, IncidentStore, StoredIncident
from cloud_core.policy import (
    REPORT_ROLES,
    VIEW_ROLES,
    Incident,
    Policy,
    Role,
    distance_m,
    incident_centres,
)
from cloud_core.registry import CameraRecord, Registry

log = structlog.get_logger(__name__)


MIN_EXTENSION_REASON = 10


@dataclass(frozen=True)
class AreaRequest:
    """A declared area as asked for: GeoJSON (text or object) and/or whole districts."""

    geojson: str | dict[str, object] | None = None
    district_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class IncidentReport:
    """An incident with the cameras inside it, nearest first, and (119) nearby facilities."""

    incident: StoredIncident
    cameras: list[CameraRecord]
    facilities: list[Facility]
    existing: bool = False
    """True when an earlier report with the same agency and external reference opened it."""


class IncidentDesk:
    """Reports, shows, lists and closes incidents for callers, recording each change."""

    def __init__(self, *, registry: Registry, incidents: IncidentStore, policy: Policy,
                 recorder: AuditRecorder, sweeper: GrantSweeper,
                 clock: Callable[[], datetime]) -> None:
        self._registry = registry
        self._incidents = incidents
        self._policy = policy
        self._recorder = recorder
        self._sweeper = sweeper
        self._clock = clock
        self._ref_locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def report(self, caller: Caller, *, incident_type: str, lat: float | None,
                     lon: float | None, radius_m: float | None = None,
                     occurred_at: datetime | None = None, external_ref: str = "",
                     legal_basis: str | None = None, service: str | None = None,
                     clamp: bool = False, area: AreaRequest | None = None) -> IncidentReport:
        """Open an incident and its grant; return the cameras inside it, nearest first.

        Idempotent per agency and ``external_ref``: a retry returns the incident the first
        report opened (``existing``), whatever its state, and opens nothing new.
        """
        operator = caller.operator
        try:
            ref = bounded_text("external_ref", external_ref, MAX_REF_CHARS)
            if legal_basis is not None:
                legal_basis = bounded_text("legal_basis", legal_basis, MAX_REASON_CHARS)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        async with self._ref_lock(operator.agency, ref):
            earlier = self._incidents.trail.incident_for_ref(operator.agency, ref) if ref else None
            if earlier is not None:
                return self._replay(caller, earlier, incident_type)
            declared = await self._area(area) if area is not None else None
            if lat is None or lon is None:
                centre = declared.centre() if declared is not None else None
                if centre is None:
                    raise InvalidRequest("an incident needs a location (or a polygon area)")
                lat, lon = centre
            incident = await self.open(caller, incident_type=incident_type, lat=lat, lon=lon,
                                       radius_m=radius_m, occurred_at=occurred_at,
                                       external_ref=ref, legal_basis=legal_basis,
                                       service=service, clamp=clamp, area=declared)
            if ref:
                holder = self._incidents.trail.claim_ref(operator.agency, ref,
                                                         incident.incident_id)
                if holder != incident.incident_id:
                    # Another replica opened the case in the same instant (the lock above is
                    # this process's): ours closes at once, on the record; theirs is the case.
                    await self.close(caller, incident.incident_id,
                                     f"duplicate of {holder}: case {ref} was reported at once "
                                     "through another core replica")
                    return self._replay(caller, holder, incident_type)
        stored = self._incidents.get(incident.incident_id)
        assert stored is not None
        return self._report(stored)

    async def open(self, caller: Caller, *, incident_type: str, lat: float, lon: float,
                   radius_m: float | None, occurred_at: datetime | None, external_ref: str,
                   legal_basis: str | None, service: str | None, clamp: bool = False,
                   may_report: bool = False, details: dict[str, object] | None = None,
                   area: GeoArea | None = None) -> Incident:
        """Decide, record and store a new incident (``may_report``: a hand-off allowed it)."""
        operator = caller.operator
        now = self._clock()
        if operator.role not in REPORT_ROLES:
            await self._recorder.refuse(caller, AuditAction.INCIDENT_REPORT,
                                        denials.may_not_report(operator.role))
        try:
            incident = self._policy.open_incident(
                incident_type, lat, lon, radius_m, occurred_at or now, now, external_ref,
                legal_basis, service=service, clamp=clamp, area=area)
        except (ValueError, PolicyError) as exc:
            raise InvalidRequest(str(getattr(exc, "problem", exc))) from exc
        except AccessDenied as exc:
            await self._recorder.refuse(caller, AuditAction.INCIDENT_REPORT, exc.reason)
        if operator.agency not in incident.agencies and not may_report:
            await self._recorder.refuse(
                caller, AuditAction.INCIDENT_REPORT,
                denials.agency_may_not_report(operator.agency, incident_type, incident))
        await self._recorder.record(_reported_entry(caller, incident, details or {}))
        self._incidents.add(incident, operator.operator_id)
        log.info("incident reported", incident=incident.incident_id, type=incident_type,
                 service=incident.service, operator=operator.operator_id)
        return incident

    async def _area(self, area: AreaRequest) -> GeoArea:
        """The declared area, validated off the event loop (a polygon may have 10,000 vertices)."""
        known = [d.district_id for d in self._registry.districts()]
        try:
            return await asyncio.to_thread(parse_area, area.geojson, area.district_ids, known)
        except AreaError as exc:
            raise InvalidRequest(str(exc)) from exc

    async def extend(self, caller: Caller, incident_id: str, minutes: int,
                     reason: str) -> StoredIncident:
        """Extend an open incident past its time box, with a written reason, on the record."""
        stored = self.get(caller, incident_id).incident
        incident, operator = stored.incident, caller.operator
        if operator.role not in VIEW_ROLES or operator.agency not in incident.agencies:
            await self._recorder.refuse(caller, AuditAction.INCIDENT_EXTEND,
                                        denials.may_not_change(operator.operator_id, incident_id),
                                        incident_id=incident_id)
        rules = self._policy.services[incident.service]
        now = self._clock()
        longest = rules.time_box // timedelta(minutes=1)
        if not rules.extendable:
            raise InvalidRequest(f"{rules.title} incidents cannot be extended past their time box")
        if incident.is_closed(now) or now >= incident.expires_at:
            raise InvalidRequest(f"incident {incident_id} is no longer open")
        if isinstance(minutes, bool) or not 1 <= minutes <= longest:
            raise InvalidRequest(f"an extension is 1 to {longest} minutes, asked {minutes}")
        try:
            written = bounded_text("reason", reason, MAX_REASON_CHARS, required=True)
        except ValueError as exc:
            raise InvalidRequest(f"an extension needs a written reason: {exc}") from exc
        if len(written) < MIN_EXTENSION_REASON:
            raise InvalidRequest(f"an extension needs a written reason of at least "
                                 f"{MIN_EXTENSION_REASON} characters, got {len(written)}")
        until = incident.expires_at + timedelta(minutes=minutes)
        await self._recorder.record(AuditEntry(
            action=AuditAction.INCIDENT_EXTEND, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            incident_id=incident_id, reason=written, purpose=incident.purpose,
            legal_basis=incident.legal_basis, period_start=incident.expires_at,
            period_end=until, details={"minutes": minutes}))
        self._incidents.extend(incident_id, until)
        extended = self._incidents.get(incident_id)
        assert extended is not None
        return extended

    def _replay(self, caller: Caller, incident_id: str, incident_type: str) -> IncidentReport:
        """A retried report: the incident the first one opened, if it is the same case."""
        stored = self._incidents.get(incident_id)
        if stored is None or not self.visible(caller, stored):
            raise IncidentNotFound(incident_id)
        if stored.incident.incident_type != incident_type:
            raise InvalidRequest(
                f"external_ref {stored.incident.external_ref!r} already names incident "
                f"{incident_id} of type {stored.incident.incident_type}, not {incident_type}")
        log.info("incident report replayed", incident=incident_id,
                 operator=caller.operator.operator_id)
        return replace(self._report(stored), existing=True)

    @asynccontextmanager
    async def _ref_lock(self, agency: str, ref: str) -> AsyncIterator[None]:
        """Serialise reports of one agency's case number, so concurrent retries open one."""
        if not ref:
            yield
            return
        key = (agency, ref)
        lock = self._ref_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._ref_locks.get(key) is lock:
                del self._ref_locks[key]

    def get(self, caller: Caller, incident_id: str) -> IncidentReport:
        """The incident and its cameras; IncidentNotFound unless the caller may see it."""
        stored = self._incidents.get(incident_id)
        if stored is None or not self.visible(caller, stored):
            raise IncidentNotFound(incident_id)
        return self._report(stored)

    def list_visible(self, caller: Caller, *,
                     include_closed: bool = False) -> list[StoredIncident]:
        """The incidents the caller may see, open ones only unless ``include_closed``."""
        return [s for s in self._incidents.list_all(include_closed=include_closed,
                                                    now=self._clock())
                if self.visible(caller, s)]

    async def close(self, caller: Caller, incident_id: str, reason: str) -> StoredIncident:
        """Close the incident; every session it backs ends at its agent within seconds."""
        operator = caller.operator
        stored = self._incidents.get(incident_id)
        if stored is None or not self.visible(caller, stored):
            raise IncidentNotFound(incident_id)
        if operator.role not in REPORT_ROLES or operator.agency not in stored.incident.agencies:
            await self._recorder.refuse(caller, AuditAction.INCIDENT_CLOSE,
                                        denials.may_not_close(operator.operator_id, incident_id),
                                        incident_id=incident_id)
        if stored.incident.closed_at is not None:
            raise InvalidRequest(f"incident {incident_id} is already closed")
        try:
            reason = bounded_text("reason", reason, MAX_REASON_CHARS, required=True)
        except ValueError as exc:
            raise InvalidRequest(f"closing an incident needs a reason: {exc}") from exc
        now = self._clock()
        await self._recorder.record(AuditEntry(
            action=AuditAction.INCIDENT_CLOSE, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            incident_id=incident_id, reason=reason, purpose=stored.incident.purpose,
            legal_basis=stored.incident.legal_basis, period_start=stored.incident.opened_at,
            period_end=now))
        self._incidents.close(incident_id, now, reason)
        await self._sweeper.sweep()
        closed = self._incidents.get(incident_id)
        assert closed is not None
        return closed

    def report_of(self, stored: StoredIncident) -> IncidentReport:
        """The incident with the cameras its grant reaches now, nearest its latest position first."""
        return self._report(stored)

    def _report(self, stored: StoredIncident) -> IncidentReport:
        incident = stored.incident
        found: dict[str, CameraRecord] = {}
        if incident.area is not None:
            found = self._area_cameras(incident.area)
        else:
            for lat, lon in incident_centres(self._policy, incident, self._clock()):
                for camera in self._registry.list_cameras(near=(lat, lon, incident.radius_m)):
                    found.setdefault(camera.camera_id, camera)
        cameras = sorted(
            (replace(c, distance_m=distance_m(incident.lat, incident.lon, c.lat, c.lon))
             for c in found.values()), key=lambda c: (c.distance_m or 0.0, c.camera_id))
        facilities: list[Facility] = []
        if self._policy.services[incident.service].facilities:
            facilities = self._incidents.facilities_near(incident.lat, incident.lon,
                                                         max(incident.radius_m, 1000.0))
        return IncidentReport(stored, cameras, facilities)

    def _area_cameras(self, area: GeoArea) -> dict[str, CameraRecord]:
        """Every camera in the area's districts and inside its polygon."""
        found = {c.camera_id: c for district in sorted(area.district_ids)
                 for c in self._registry.list_cameras(district_id=district)}
        box, centre = area.bounds(), area.centre()
        if box is not None and centre is not None:
            reach = max(distance_m(centre[0], centre[1], lat, lon)
                        for lat in (box[0], box[2]) for lon in (box[1], box[3]))
            for camera in self._registry.list_cameras(near=(*centre, reach + 1.0)):
                if area.covers(camera.district_id, camera.lat, camera.lon):
                    found.setdefault(camera.camera_id, camera)
        return found

    def visible(self, caller: Caller, stored: StoredIncident) -> bool:
        """Admitted agencies, the reporter, auditors and admins, and the agencies of incidents
        linked to it (an SOS's protection centre sees the 112 incident it handed off)."""
        operator = caller.operator
        if operator.role is Role.FIELD:     # officers see only what they are assigned to
            return self._incidents.dispatch.is_assigned(stored.incident.incident_id,
                                                        operator.operator_id)
        if (operator.role in (Role.AUDITOR, Role.ADMIN)
                or operator.agency in stored.incident.agencies
                or operator.operator_id == stored.reported_by):
            return True
        for link in self._incidents.trail.links(stored.incident.incident_id):
            other = self._incidents.get(link.other_id)
            if other is not None and operator.agency in other.incident.agencies:
                return True
        return False


def _reported_entry(caller: Caller, incident: Incident,
                    details: dict[str, object]) -> AuditEntry:
    operator = caller.operator
    return AuditEntry(
        action=AuditAction.INCIDENT_REPORT, operator_id=operator.operator_id,
        agency=operator.agency, source_address=caller.source_address or None,
        incident_id=incident.incident_id, purpose=incident.purpose,
        legal_basis=incident.legal_basis, period_start=incident.opened_at,
        period_end=incident.expires_at,
        details={"type": incident.incident_type, "service": incident.service,
                 "lat": incident.lat, "lon": incident.lon, "radius_m": incident.radius_m,
                 "agencies": sorted(incident.agencies), "external_ref": incident.external_ref,
                 **details})
