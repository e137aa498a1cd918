"""Incidents as callers see them: report one (opening its grant), look one up, list, close.

An incident is visible to the agencies it admits, to whoever reported it, and to auditors and
admins; to anyone else it does not exist. Closing one ends every session it backs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from cloud_core.access import denials
from cloud_core.access.caller import Caller
from cloud_core.access.grant_sweeper import GrantSweeper
from cloud_core.access.recorder import AuditRecorder
from cloud_core.audit import AuditAction, AuditEntry
from cloud_core.exceptions import AccessDenied, IncidentNotFound, InvalidRequest, PolicyError
from cloud_core.incidents import Facility, IncidentStore, StoredIncident
from cloud_core.policy import VIEW_ROLES, Incident, Policy, Role
from cloud_core.registry import CameraRecord, Registry

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class IncidentReport:
    """An incident with the cameras inside it, nearest first, and (119) nearby facilities."""

    incident: StoredIncident
    cameras: list[CameraRecord]
    facilities: list[Facility]


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

    async def report(self, caller: Caller, *, incident_type: str, lat: float, lon: float,
                     radius_m: float | None = None, occurred_at: datetime | None = None,
                     external_ref: str = "", legal_basis: str | None = None,
                     service: str | None = None) -> IncidentReport:
        """Open an incident and its grant; return the cameras inside it, nearest first."""
        operator = caller.operator
        now = self._clock()
        if operator.role not in VIEW_ROLES:
            await self._recorder.refuse(caller, AuditAction.INCIDENT_REPORT,
                                        denials.may_not_report(operator.role))
        try:
            incident = self._policy.open_incident(
                incident_type, lat, lon, radius_m, occurred_at or now, now, external_ref,
                legal_basis, service=service)
        except (ValueError, PolicyError) as exc:
            raise InvalidRequest(str(getattr(exc, "problem", exc))) from exc
        except AccessDenied as exc:
            await self._recorder.refuse(caller, AuditAction.INCIDENT_REPORT, exc.reason)
        if operator.agency not in incident.agencies:
            await self._recorder.refuse(
                caller, AuditAction.INCIDENT_REPORT,
                denials.agency_may_not_report(operator.agency, incident_type, incident))
        await self._recorder.record(_reported_entry(caller, incident))
        self._incidents.add(incident, operator.operator_id)
        log.info("incident reported", incident=incident.incident_id, type=incident_type,
                 service=incident.service, operator=operator.operator_id)
        stored = self._incidents.get(incident.incident_id)
        assert stored is not None
        return self._report(stored)

    def get(self, caller: Caller, incident_id: str) -> IncidentReport:
        """The incident and its cameras; IncidentNotFound unless the caller may see it."""
        stored = self._incidents.get(incident_id)
        if stored is None or not self._visible(caller, stored):
            raise IncidentNotFound(incident_id)
        return self._report(stored)

    def list_visible(self, caller: Caller, *,
                     include_closed: bool = False) -> list[StoredIncident]:
        """The incidents the caller may see, open ones only unless ``include_closed``."""
        return [s for s in self._incidents.list_all(include_closed=include_closed,
                                                    now=self._clock())
                if self._visible(caller, s)]

    async def close(self, caller: Caller, incident_id: str, reason: str) -> StoredIncident:
        """Close the incident; every session it backs ends at its agent within seconds."""
        operator = caller.operator
        stored = self._incidents.get(incident_id)
        if stored is None or not self._visible(caller, stored):
            raise IncidentNotFound(incident_id)
        if operator.role not in VIEW_ROLES or operator.agency not in stored.incident.agencies:
            await self._recorder.refuse(caller, AuditAction.INCIDENT_CLOSE,
                                        denials.may_not_close(operator.operator_id, incident_id),
                                        incident_id=incident_id)
        if stored.incident.closed_at is not None:
            raise InvalidRequest(f"incident {incident_id} is already closed")
        if not reason.strip():
            raise InvalidRequest("closing an incident needs a reason")
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

    def _report(self, stored: StoredIncident) -> IncidentReport:
        incident = stored.incident
        cameras = self._registry.list_cameras(near=(incident.lat, incident.lon, incident.radius_m))
        facilities: list[Facility] = []
        if self._policy.services[incident.service].facilities:
            facilities = self._incidents.facilities_near(incident.lat, incident.lon,
                                                         max(incident.radius_m, 1000.0))
        return IncidentReport(stored, cameras, facilities)

    @staticmethod
    def _visible(caller: Caller, stored: StoredIncident) -> bool:
        operator = caller.operator
        return (operator.role in (Role.AUDITOR, Role.ADMIN)
                or operator.agency in stored.incident.agencies
                or operator.operator_id == stored.reported_by)


def _reported_entry(caller: Caller, incident: Incident) -> AuditEntry:
    operator = caller.operator
    return AuditEntry(
        action=AuditAction.INCIDENT_REPORT, operator_id=operator.operator_id,
        agency=operator.agency, source_address=caller.source_address or None,
        incident_id=incident.incident_id, purpose=incident.purpose,
        legal_basis=incident.legal_basis, period_start=incident.opened_at,
        period_end=incident.expires_at,
        details={"type": incident.incident_type, "service": incident.service,
                 "lat": incident.lat, "lon": incident.lon, "radius_m": incident.radius_m,
                 "agencies": sorted(incident.agencies), "external_ref": incident.external_ref})
