"""Who may see which camera, when and why: the core's access layer.

Every operation an agency performs goes through ``AccessService`` — gRPC servicers and the
browser console alike — so one place authenticates, decides with the policy, signs grants,
writes the audit log, and takes access away again when a grant ends. It is plain async code:
tests drive it without gRPC.

Default deny. A decision is written to the audit log before anything is relayed; if the log
cannot be written, access is refused (fail closed).

Denials of a view say why without revealing whether a camera exists: an unknown camera and a
camera outside every grant the caller holds get the same answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from cloud_core.audit import AuditAction, AuditEntry, AuditLog, AuditOutcome, AuditRecord
from cloud_core.exceptions import (
    AccessDenied,
    AuditError,
    CameraNotFound,
    IncidentNotFound,
    InvalidRequest,
    PolicyError,
    SessionNotFound,
)
from cloud_core.grants import GrantSigner
from cloud_core.incidents import Facility, IncidentStore, StoredIncident
from cloud_core.operators import OperatorStore
from cloud_core.policy import (
    BreakGlass,
    CameraPlace,
    Decision,
    Incident,
    Operator,
    Policy,
    Role,
    decide_view,
    start_break_glass,
)
from cloud_core.registry import CameraRecord, Registry
from cloud_core.sessions import InvalidOffer, OpenedSession, SessionBroker, check_offer
from protos.safetynet.v1 import mqtt_pb2
from runtime.grant import GrantClaimsData

log = structlog.get_logger(__name__)

VIEW_ROLES = frozenset({Role.OPERATOR, Role.SUPERVISOR})


@dataclass(frozen=True)
class Caller:
    """An authenticated operator and where the call came from (for the record)."""

    operator: Operator
    source_address: str = ""


@dataclass(frozen=True)
class IncidentReport:
    incident: StoredIncident
    cameras: list[CameraRecord]
    facilities: list[Facility]


@dataclass(frozen=True)
class SessionState:
    session_id: str
    camera_id: str
    active: bool
    reason: str            # why it ended ("incident closed", "expired", …); empty while active
    expires_at: datetime


class AccessService:
    def __init__(self, *, registry: Registry, operators: OperatorStore, incidents: IncidentStore,
                 policy: Policy, signer: GrantSigner, audit: AuditLog, sessions: SessionBroker,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.registry = registry
        self.operators = operators
        self.incidents = incidents
        self.policy = policy
        self.signer = signer
        self.audit = audit
        self.sessions = sessions
        self._clock = clock
        self._revoking: set[str] = set()

    # --- identity -------------------------------------------------------------------------

    def authenticate(self, token: str, source_address: str = "") -> Caller:
        """The caller holding ``token``; raises Unauthenticated."""
        return Caller(self.operators.authenticate(token), source_address)

    # --- cameras --------------------------------------------------------------------------

    def list_cameras(self, caller: Caller, *, district_id: str = "", status: str = "",
                     near: tuple[float, float, float] | None = None,
                     limit: int = 0) -> list[CameraRecord]:
        """The camera map: positions and status only (no video), for any enabled operator."""
        return self.registry.list_cameras(district_id=district_id, status=status, near=near,
                                          limit=limit)

    # --- incidents ------------------------------------------------------------------------

    async def report_incident(self, caller: Caller, *, incident_type: str, lat: float, lon: float,
                              radius_m: float | None = None, occurred_at: datetime | None = None,
                              external_ref: str = "", legal_basis: str | None = None,
                              service: str | None = None) -> IncidentReport:
        """Open an incident and its grant; return the cameras inside it, nearest first."""
        operator = caller.operator
        now = self._clock()
        if operator.role not in VIEW_ROLES:
            await self._deny_event(caller, AuditAction.INCIDENT_REPORT,
                                   f"role {operator.role} may not report incidents")
        try:
            incident = self.policy.open_incident(
                incident_type, lat, lon, radius_m, occurred_at or now, now, external_ref,
                legal_basis, service=service)
        except (ValueError, PolicyError) as exc:
            raise InvalidRequest(str(getattr(exc, "problem", exc))) from exc
        except AccessDenied as exc:
            await self._deny_event(caller, AuditAction.INCIDENT_REPORT, exc.reason)
        if operator.agency not in incident.agencies:
            await self._deny_event(
                caller, AuditAction.INCIDENT_REPORT,
                f"agency {operator.agency} may not report {incident_type} incidents "
                f"(service {incident.service} admits {', '.join(sorted(incident.agencies))})")
        await self._record(AuditEntry(
            action=AuditAction.INCIDENT_REPORT, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            incident_id=incident.incident_id, purpose=incident.purpose,
            legal_basis=incident.legal_basis, period_start=incident.opened_at,
            period_end=incident.expires_at,
            details={"type": incident.incident_type, "service": incident.service,
                     "lat": incident.lat, "lon": incident.lon, "radius_m": incident.radius_m,
                     "agencies": sorted(incident.agencies), "external_ref": incident.external_ref}))
        self.incidents.add(incident, operator.operator_id)
        log.info("incident reported", incident=incident.incident_id, type=incident_type,
                 service=incident.service, operator=operator.operator_id)
        stored = self.incidents.get(incident.incident_id)
        assert stored is not None
        return self._report(stored)

    def _report(self, stored: StoredIncident) -> IncidentReport:
        incident = stored.incident
        cameras = self.registry.list_cameras(near=(incident.lat, incident.lon, incident.radius_m))
        facilities: list[Facility] = []
        if self.policy.services[incident.service].facilities:
            facilities = self.incidents.facilities_near(incident.lat, incident.lon,
                                                        max(incident.radius_m, 1000.0))
        return IncidentReport(stored, cameras, facilities)

    def _visible(self, caller: Caller, stored: StoredIncident) -> bool:
        operator = caller.operator
        return (operator.role in (Role.AUDITOR, Role.ADMIN)
                or operator.agency in stored.incident.agencies
                or operator.operator_id == stored.reported_by)

    def get_incident(self, caller: Caller, incident_id: str) -> IncidentReport:
        stored = self.incidents.get(incident_id)
        if stored is None or not self._visible(caller, stored):
            raise IncidentNotFound(incident_id)
        return self._report(stored)

    def list_incidents(self, caller: Caller, *, include_closed: bool = False) -> list[StoredIncident]:
        return [s for s in self.incidents.list_all(include_closed=include_closed, now=self._clock())
                if self._visible(caller, s)]

    async def close_incident(self, caller: Caller, incident_id: str, reason: str) -> StoredIncident:
        """Close the incident; every session it backs ends at its agent within seconds."""
        operator = caller.operator
        stored = self.incidents.get(incident_id)
        if stored is None or not self._visible(caller, stored):
            raise IncidentNotFound(incident_id)
        if operator.role not in VIEW_ROLES or operator.agency not in stored.incident.agencies:
            await self._deny_event(caller, AuditAction.INCIDENT_CLOSE,
                                   f"{operator.operator_id} may not close incident {incident_id}",
                                   incident_id=incident_id)
        if stored.incident.closed_at is not None:
            raise InvalidRequest(f"incident {incident_id} is already closed")
        if not reason.strip():
            raise InvalidRequest("closing an incident needs a reason")
        now = self._clock()
        await self._record(AuditEntry(
            action=AuditAction.INCIDENT_CLOSE, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            incident_id=incident_id, reason=reason, purpose=stored.incident.purpose,
            legal_basis=stored.incident.legal_basis, period_start=stored.incident.opened_at,
            period_end=now))
        self.incidents.close(incident_id, now, reason)
        await self.sweep()
        closed = self.incidents.get(incident_id)
        assert closed is not None
        return closed

    # --- sessions -------------------------------------------------------------------------

    def _decide(self, caller: Caller, camera: CameraRecord | None, incident_id: str,
                breakglass_id: str) -> tuple[Decision, str]:
        """The policy's decision, and the reason the caller may be told."""
        operator = caller.operator
        now = self._clock()
        incident = None
        if incident_id:
            stored = self.incidents.get(incident_id)
            if stored is None:
                return Decision.deny(f"incident {incident_id} does not exist"), \
                    f"incident {incident_id} does not exist or is not yours"
            incident = stored.incident
        window = None
        if breakglass_id:
            window = self.incidents.break_glass(breakglass_id)
            if window is None:
                return Decision.deny(f"break-glass {breakglass_id} does not exist"), \
                    f"break-glass {breakglass_id} does not exist or is not yours"
        if camera is None:
            decision = Decision.deny("unknown camera")
        else:
            place = CameraPlace(camera.camera_id, camera.district_id, camera.lat, camera.lon)
            decision = decide_view(self.policy, operator, place, incident, now, window)
        if decision.allowed:
            return decision, decision.reason
        return decision, self._public_reason(caller, camera, incident, window, decision)

    def _public_reason(self, caller: Caller, camera: CameraRecord | None, incident: object,
                       window: BreakGlass | None, decision: Decision) -> str:
        """Why, in words that do not tell an unknown camera from one outside the caller's grants."""
        operator = caller.operator
        now = self._clock()
        if not operator.enabled or operator.role not in VIEW_ROLES:
            return decision.reason
        parts = []
        if isinstance(incident, Incident):
            if incident.closed_at is not None and incident.closed_at <= now:
                parts.append(f"incident {incident.incident_id} is closed")
            elif now >= incident.expires_at:
                parts.append(f"incident {incident.incident_id}'s time box ended at "
                             f"{incident.expires_at:%H:%M:%S} UTC")
            elif operator.agency not in incident.agencies:
                parts.append(f"agency {operator.agency} is not admitted to incident "
                             f"{incident.incident_id}")
            else:
                parts.append(f"the camera is not within incident {incident.incident_id}'s "
                             f"{incident.radius_m:.0f} m radius")
        if window is not None:
            if window.operator_id != operator.operator_id:
                parts.append(f"break-glass {window.breakglass_id} is not yours")
            elif window.stopped_at is not None or now >= window.expires_at:
                parts.append(f"break-glass {window.breakglass_id} has ended")
            else:
                parts.append(f"the camera is outside break-glass {window.breakglass_id}'s scope")
        if not parts:
            parts.append("no incident, break-glass window or standing access of yours covers "
                         "this camera")
        return "; ".join(parts)

    async def open_session(self, caller: Caller, camera_id: str, sdp_offer: str, *,
                           incident_id: str = "", breakglass_id: str = "") -> OpenedSession:
        """Decide, record, sign a grant, relay the offer; the answer, or AccessDenied."""
        operator = caller.operator
        try:
            check_offer(sdp_offer)
        except InvalidOffer as exc:
            raise InvalidRequest(str(exc)) from exc
        camera = self.registry.camera(camera_id)
        decision, public_reason = self._decide(caller, camera, incident_id, breakglass_id)
        now = self._clock()
        session_id = SessionBroker.new_session_id()
        entry = AuditEntry(
            action=AuditAction.ACCESS_GRANT if decision.allowed else AuditAction.ACCESS_DENY,
            operator_id=operator.operator_id, agency=operator.agency,
            source_address=caller.source_address or None, camera_ids=(camera_id,),
            incident_id=decision.incident_id or incident_id or None,
            purpose=decision.purpose or None, legal_basis=decision.legal_basis or None,
            outcome=AuditOutcome.OK if decision.allowed else AuditOutcome.DENIED,
            reason=decision.reason, period_start=now if decision.allowed else None,
            period_end=decision.expires_at,
            details={"session_id": session_id, "basis": decision.basis.value,
                     **({"breakglass_id": breakglass_id} if breakglass_id else {})})
        await self._record(entry)
        if not decision.allowed or camera is None or decision.expires_at is None:
            raise AccessDenied(public_reason)
        claims = GrantClaimsData(
            session_id=session_id, camera_id=camera.camera_id, district_id=camera.district_id,
            operator_id=operator.operator_id, agency=operator.agency,
            incident_id=decision.incident_id or "", purpose=decision.purpose,
            not_before=now, expires_at=decision.expires_at)
        grant = self.signer.sign(claims)
        try:
            opened = await self.sessions.open(
                camera.camera_id, sdp_offer, expires_at=decision.expires_at, grant=grant,
                session_id=session_id,
                record={"operator_id": operator.operator_id, "agency": operator.agency,
                        "incident_id": decision.incident_id or "",
                        "breakglass_id": decision.breakglass_id or "",
                        "basis": decision.basis.value})
        except CameraNotFound as exc:  # vanished between decision and relay
            raise AccessDenied(public_reason) from exc
        await self._record(AuditEntry(
            action=AuditAction.SESSION_OPEN, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            camera_ids=(camera.camera_id,), incident_id=decision.incident_id,
            purpose=decision.purpose, legal_basis=decision.legal_basis,
            period_start=now, period_end=opened.expires_at,
            details={"session_id": session_id, "district_id": camera.district_id,
                     "basis": decision.basis.value}))
        return opened

    def _session(self, caller: Caller, session_id: str) -> dict[str, object]:
        record = self.registry.session(session_id)
        operator = caller.operator
        if record is None or not (
                record["operator_id"] == operator.operator_id
                or (operator.role == Role.SUPERVISOR and record["agency"] == operator.agency)):
            raise SessionNotFound(session_id)
        return record

    async def close_session(self, caller: Caller, session_id: str) -> None:
        record = self._session(caller, session_id)
        if record["closed_at"] is not None:
            raise SessionNotFound(session_id)
        await self.sessions.close(session_id, "closed by viewer")

    def session_state(self, caller: Caller, session_id: str) -> SessionState:
        record = self._session(caller, session_id)
        return SessionState(
            session_id=session_id, camera_id=str(record["camera_id"]),
            active=record["closed_at"] is None, reason=str(record["close_reason"] or ""),
            expires_at=datetime.fromisoformat(str(record["expires_at"])))

    async def revoke_session(self, caller: Caller, session_id: str, reason: str) -> None:
        operator = caller.operator
        record = self.registry.session(session_id)
        if record is None or record["closed_at"] is not None:
            raise SessionNotFound(session_id)
        if operator.role != Role.SUPERVISOR or operator.agency not in (record["agency"],):
            await self._deny_event(caller, AuditAction.GRANT_REVOKE,
                                   "only a supervisor of the session's agency may revoke it")
        await self._revoke(record, f"revoked by {operator.operator_id}: {reason or 'no reason given'}",
                           by=operator)

    # --- break-glass ----------------------------------------------------------------------

    async def start_break_glass(self, caller: Caller, *, camera_ids: list[str],
                                district_ids: list[str], reason: str, minutes: int) -> BreakGlass:
        operator = caller.operator
        now = self._clock()
        try:
            window = start_break_glass(self.policy, operator, camera_ids, reason, now, minutes,
                                       district_ids=district_ids)
        except AccessDenied as exc:
            await self._deny_event(caller, AuditAction.BREAKGLASS_START, exc.reason)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        await self._record(AuditEntry(
            action=AuditAction.BREAKGLASS_START, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            camera_ids=tuple(sorted(window.camera_ids)), reason=window.reason,
            purpose=f"{self.policy.break_glass.purpose_prefix}: {window.reason}",
            legal_basis=self.policy.break_glass.legal_basis, period_start=window.started_at,
            period_end=window.expires_at,
            details={"breakglass_id": window.breakglass_id,
                     "district_ids": sorted(window.district_ids)}))
        self.incidents.add_break_glass(window)
        return window

    async def stop_break_glass(self, caller: Caller, breakglass_id: str) -> BreakGlass:
        window = self.incidents.break_glass(breakglass_id)
        if window is None or window.operator_id != caller.operator.operator_id:
            raise InvalidRequest(f"break-glass {breakglass_id} does not exist or is not yours")
        if window.stopped_at is not None:
            raise InvalidRequest(f"break-glass {breakglass_id} is already stopped")
        now = self._clock()
        await self._record_stop(window, now, caller)
        self.incidents.stop_break_glass(breakglass_id, now)
        await self.sweep()
        stopped = self.incidents.break_glass(breakglass_id)
        assert stopped is not None
        return stopped

    async def _record_stop(self, window: BreakGlass, at: datetime, caller: Caller | None) -> None:
        await self._record(AuditEntry(
            action=AuditAction.BREAKGLASS_STOP,
            operator_id=caller.operator.operator_id if caller else "system:core",
            agency=caller.operator.agency if caller else None,
            camera_ids=tuple(sorted(window.camera_ids)), reason=window.reason,
            period_start=window.started_at, period_end=min(at, window.expires_at),
            details={"breakglass_id": window.breakglass_id,
                     "ended": "stopped" if caller else "expired"}))

    def break_glass_review(self, since: datetime | None = None,
                           until: datetime | None = None) -> list[BreakGlass]:
        return self.incidents.break_glass_windows(since, until)

    # --- grants ending --------------------------------------------------------------------

    def _why_grant_ended(self, record: dict[str, object], now: datetime, disabled: set[str],
                         incidents: dict[str, StoredIncident | None]) -> str | None:
        if record["operator_id"] in disabled:
            return "operator disabled"
        if record["incident_id"]:
            incident_id = str(record["incident_id"])
            if incident_id not in incidents:
                incidents[incident_id] = self.incidents.get(incident_id)
            stored = incidents[incident_id]
            if stored is None:
                return "incident gone"
            if stored.incident.closed_at is not None:
                return "incident closed"
            if now >= stored.incident.expires_at:
                return "incident time box ended"
        if record["breakglass_id"]:
            window = self.incidents.break_glass(str(record["breakglass_id"]))
            if window is None or window.stopped_at is not None:
                return "break-glass stopped"
            if now >= window.expires_at:
                return "break-glass ended"
        if now >= datetime.fromisoformat(str(record["expires_at"])):
            return "grant expired"
        return None

    async def sweep(self) -> list[str]:
        """End every open session whose grant no longer holds; return their ids.

        Run every second by the server, and at once when an incident closes, so an ended grant
        ends its video within seconds even if an agent missed its own expiry timer.
        """
        now = self._clock()
        disabled = self.operators.disabled_ids()
        incidents: dict[str, StoredIncident | None] = {}
        ending = []
        for record in self.registry.open_sessions():
            if record["session_id"] in self._revoking:
                continue
            reason = self._why_grant_ended(record, now, disabled, incidents)
            if reason is not None:
                ending.append((record, reason))
        await self._expire_break_glass(now)
        await asyncio.gather(*(self._revoke(record, reason) for record, reason in ending))
        return [str(record["session_id"]) for record, _ in ending]

    async def _expire_break_glass(self, now: datetime) -> None:
        """Close the START/STOP pair of windows that ran out without being stopped."""
        for window in self.incidents.break_glass_windows():
            if window.stopped_at is None and now >= window.expires_at:
                await self._record_stop(window, now, None)
                self.incidents.stop_break_glass(window.breakglass_id, window.expires_at)

    async def _revoke(self, record: dict[str, object], reason: str,
                      by: Operator | None = None) -> None:
        session_id = str(record["session_id"])
        self._revoking.add(session_id)
        try:
            await self._record(AuditEntry(
                action=AuditAction.GRANT_REVOKE,
                operator_id=by.operator_id if by else "system:core",
                agency=by.agency if by else None, camera_ids=(str(record["camera_id"]),),
                incident_id=str(record["incident_id"]) or None, reason=reason,
                details={"session_id": session_id, "operator": str(record["operator_id"])}))
            await self.sessions.close_at_agent(session_id, str(record["district_id"]), reason)
            self.registry.end_session(session_id, self._clock(), reason)
            log.info("grant ended, session closed", session=session_id, reason=reason)
        finally:
            self._revoking.discard(session_id)

    async def session_ended(self, event: mqtt_pb2.SessionEvent) -> None:
        """The agent's account of a session's end: duration and bytes, for the record."""
        record = self.registry.session(event.session_id)
        if record is None:
            return
        ended = event.at.ToDatetime(tzinfo=UTC)
        started = datetime.fromisoformat(str(record["opened_at"]))
        await self._record(AuditEntry(
            action=AuditAction.SESSION_CLOSE, operator_id=str(record["operator_id"]) or "unknown",
            agency=str(record["agency"]) or None, camera_ids=(str(record["camera_id"]),),
            incident_id=str(record["incident_id"]) or None, reason=event.reason,
            period_start=min(started, ended), period_end=ended,
            details={"session_id": event.session_id, "district_id": str(record["district_id"]),
                     "duration_seconds": round(event.duration_seconds, 3),
                     "bytes_sent": event.bytes_sent}))

    # --- audit ----------------------------------------------------------------------------

    def require_auditor(self, caller: Caller) -> None:
        if caller.operator.role != Role.AUDITOR:
            raise AccessDenied(f"role {caller.operator.role} may not read the audit log; "
                               "auditors only")

    async def record_export(self, caller: Caller, since: datetime | None, until: datetime | None,
                            fmt: str, records: int) -> None:
        await self._record(AuditEntry(
            action=AuditAction.AUDIT_EXPORT, operator_id=caller.operator.operator_id,
            agency=caller.operator.agency, source_address=caller.source_address or None,
            period_start=since, period_end=until,
            details={"format": fmt, "records": records}))

    async def _record(self, entry: AuditEntry) -> AuditRecord:
        try:
            return await self.audit.append(entry)
        except AuditError as exc:
            log.error("audit log unavailable, refusing", error=str(exc), action=entry.action.value)
            raise AccessDenied("the audit log cannot be written; access is refused until it can") from exc

    async def _deny_event(self, caller: Caller, action: AuditAction, reason: str, *,
                          incident_id: str | None = None) -> None:
        """Record a refused action and raise AccessDenied with ``reason``."""
        await self._record(AuditEntry(
            action=action, operator_id=caller.operator.operator_id, agency=caller.operator.agency,
            source_address=caller.source_address or None, incident_id=incident_id,
            outcome=AuditOutcome.DENIED, reason=reason))
        raise AccessDenied(reason)

