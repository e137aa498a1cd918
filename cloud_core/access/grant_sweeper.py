"""Taking access away again: end every open session whose grant no longer holds.

A grant ends when its operator is disabled, its incident closes, goes or runs out of time, moves
away from the camera (a fleeing suspect's incident no longer reaches it), its break-glass window
stops or runs out, or its own expiry passes. The sweeper closes such sessions
at their agent and records why; it also closes the audit pair of windows that expired unstopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from cloud_core.access.recorder import AuditRecorder
from cloud_core.audit import AuditAction, AuditEntry
from cloud_core.incidents import IncidentStore, StoredIncident
from cloud_core.operators import OperatorStore
from cloud_core.policy import CameraPlace, Operator, Policy, Role, incident_reaches
from cloud_core.registry import CameraRecord, Registry
from cloud_core.sessions import SessionBroker

log = structlog.get_logger(__name__)


@dataclass
class _Pass:
    """What one sweep has read so far: each incident, camera and operator once per pass, not
    once per open session (a hundred viewers of one incident's cameras are one read each)."""

    disabled: set[str]
    incidents: dict[str, StoredIncident | None] = field(default_factory=dict)
    cameras: dict[str, CameraRecord | None] = field(default_factory=dict)
    operators: dict[str, Operator | None] = field(default_factory=dict)


class GrantSweeper:
    """Ends sessions whose grant has ended, once each, even when several sweeps overlap."""

    def __init__(self, *, registry: Registry, operators: OperatorStore, incidents: IncidentStore,
                 sessions: SessionBroker, recorder: AuditRecorder, policy: Policy,
                 clock: Callable[[], datetime]) -> None:
        self._registry = registry
        self._policy = policy
        self._operators = operators
        self._incidents = incidents
        self._sessions = sessions
        self._recorder = recorder
        self._clock = clock
        self._revoking: set[str] = set()

    async def sweep(self) -> list[str]:
        """End every open session whose grant no longer holds; return their ids.

        Run every second by the server, and at once when an incident closes, so an ended grant
        ends its video within seconds even if an agent missed its own expiry timer.
        """
        now = self._clock()
        seen = _Pass(disabled=self._operators.disabled_ids())
        ending = []
        for record in self._registry.open_sessions():
            if record["session_id"] in self._revoking:
                continue
            reason = self._why_grant_ended(record, now, seen)
            if reason is not None:
                ending.append((record, reason))
        await self._expire_break_glass(now)
        await asyncio.gather(*(self.revoke(record, reason) for record, reason in ending))
        return [str(record["session_id"]) for record, _ in ending]

    @property
    def revoking(self) -> frozenset[str]:
        """Sessions being ended right now (a second emergency must not pick the same one)."""
        return frozenset(self._revoking)

    async def revoke(self, record: dict[str, object], reason: str,
                     by: Operator | None = None) -> None:
        """Record the revocation, close the session at its agent, mark it ended."""
        session_id = str(record["session_id"])
        self._revoking.add(session_id)
        try:
            await self._recorder.record(AuditEntry(
                action=AuditAction.GRANT_REVOKE,
                operator_id=by.operator_id if by else "system:core",
                agency=by.agency if by else None, camera_ids=(str(record["camera_id"]),),
                incident_id=str(record["incident_id"]) or None, reason=reason,
                details={"session_id": session_id, "operator": str(record["operator_id"])}))
            await self._sessions.close_at_agent(session_id, str(record["district_id"]), reason)
            self._registry.end_session(session_id, self._clock(), reason)
            log.info("grant ended, session closed", session=session_id, reason=reason)
        finally:
            self._revoking.discard(session_id)

    def _why_grant_ended(self, record: dict[str, object], now: datetime,
                         seen: _Pass) -> str | None:
        if record["operator_id"] in seen.disabled:
            return "operator disabled"
        if record["incident_id"]:
            incident_id = str(record["incident_id"])
            if incident_id not in seen.incidents:
                seen.incidents[incident_id] = self._incidents.get(incident_id)
            stored = seen.incidents[incident_id]
            if stored is None:
                return "incident gone"
            if stored.incident.closed_at is not None:
                return "incident closed"
            if now >= stored.incident.expires_at:
                return "incident time box ended"
            if record["basis"] == "incident" and not self._still_reached(record, stored, now,
                                                                         seen):
                return "camera out of the incident's range"
            field_problem = self._field_problem(record, seen)
            if field_problem is not None:
                return field_problem
        if record["breakglass_id"]:
            window = self._incidents.break_glass(str(record["breakglass_id"]))
            if window is None or window.stopped_at is not None:
                return "break-glass stopped"
            if now >= window.expires_at:
                return "break-glass ended"
        if now >= datetime.fromisoformat(str(record["expires_at"])):
            return "grant expired"
        return None

    def _field_problem(self, record: dict[str, object], seen: _Pass) -> str | None:
        """A field officer's session holds only while assigned and handed the camera."""
        operator_id = str(record["operator_id"])
        if operator_id not in seen.operators:
            seen.operators[operator_id] = self._operators.get(operator_id)
        operator = seen.operators[operator_id]
        if operator is None or operator.role is not Role.FIELD:
            return None
        dispatch = self._incidents.dispatch
        incident_id = str(record["incident_id"])
        if not dispatch.is_assigned(incident_id, operator.operator_id):
            return "officer unassigned"
        if not dispatch.handed_off(incident_id, str(record["camera_id"])):
            return "camera not handed off"
        return None

    def _still_reached(self, record: dict[str, object], stored: StoredIncident,
                       now: datetime, seen: _Pass) -> bool:
        camera_id = str(record["camera_id"])
        if camera_id not in seen.cameras:
            seen.cameras[camera_id] = self._registry.camera(camera_id)
        camera = seen.cameras[camera_id]
        if camera is None:
            return False
        place = CameraPlace(camera.camera_id, camera.district_id, camera.lat, camera.lon)
        return incident_reaches(self._policy, stored.incident, place, now)

    async def _expire_break_glass(self, now: datetime) -> None:
        """Close the START/STOP pair of windows that ran out without being stopped."""
        for window in self._incidents.break_glass_windows():
            if window.stopped_at is None and now >= window.expires_at:
                await self._recorder.break_glass_stopped(window, now, None)
                self._incidents.stop_break_glass(window.breakglass_id, window.expires_at)
