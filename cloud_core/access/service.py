"""``AccessService``: the one door every agency operation goes through.

gRPC servicers and the browser console alike call this façade, so one place authenticates,
decides with the policy, signs grants, writes the audit log, and takes access away again when a
grant ends. It builds its parts from its collaborators and hands each call to the part whose job
it is; it decides nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from cloud_core import field_limits as limits
from cloud_core.access import denials
from cloud_core.access.break_glass_desk import BreakGlassDesk
from cloud_core.access.caller import Caller
from cloud_core.access.grant_sweeper import GrantSweeper
from cloud_core.access.incident_desk import IncidentDesk, IncidentReport
from cloud_core.access.recorder import AuditRecorder
from cloud_core.access.session_desk import SessionDesk, SessionState
from cloud_core.audit import AuditAction, AuditEntry, AuditLog
from cloud_core.exceptions import AccessDenied, InvalidRequest, Unauthenticated
from cloud_core.field_limits import check_optional, check_text
from cloud_core.grants import GrantSigner
from cloud_core.incidents import IncidentStore, StoredIncident
from cloud_core.operators import OperatorStore
from cloud_core.policy import BreakGlass, Policy, Role
from cloud_core.registry import CameraRecord, Registry
from cloud_core.session_capacity import SessionCaps, capacity_refusal
from cloud_core.sessions import OpenedSession, SessionBroker
from cloud_core.sign_in_throttle import SignInThrottle, source_key
from cloud_core.status_ingest import AGENT_OFFLINE
from protos.safetynet.v1 import mqtt_pb2

MAX_BREAK_GLASS_SCOPE = 500


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AccessService:
    """Authenticate, then incidents, sessions, break-glass, ending grants and the audit trail."""

    def __init__(self, *, registry: Registry, operators: OperatorStore, incidents: IncidentStore,
                 policy: Policy, signer: GrantSigner, audit: AuditLog, sessions: SessionBroker,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self.registry = registry
        self.operators = operators
        self.incidents = incidents
        self.policy = policy
        self.signer = signer
        self.audit = audit
        self.sessions = sessions
        self._clock = clock
        self.sign_in = SignInThrottle()
        self.session_caps = SessionCaps()
        self._recorder = AuditRecorder(audit)
        self._sweeper = GrantSweeper(registry=registry, operators=operators, incidents=incidents,
                                     sessions=sessions, recorder=self._recorder, clock=clock)
        self._incident_desk = IncidentDesk(registry=registry, incidents=incidents, policy=policy,
                                           recorder=self._recorder, sweeper=self._sweeper,
                                           clock=clock)
        self._session_desk = SessionDesk(registry=registry, incidents=incidents, policy=policy,
                                         signer=signer, sessions=sessions,
                                         recorder=self._recorder, sweeper=self._sweeper,
                                         clock=clock)
        self._break_glass_desk = BreakGlassDesk(incidents=incidents, policy=policy,
                                                recorder=self._recorder, sweeper=self._sweeper,
                                                clock=clock)

    # --- identity and cameras -----------------------------------------------------------------

    def authenticate(self, token: str, source_address: str = "") -> Caller:
        """The caller holding ``token``; raises Unauthenticated, or SignInThrottled while the
        source must wait after failed sign-ins (``cloud_core.sign_in_throttle``)."""
        source = source_key(source_address)
        self.sign_in.check(source)
        try:
            operator = self.operators.authenticate(token)
        except Unauthenticated:
            if token:
                self.sign_in.failed(source)
            raise
        self.sign_in.succeeded(source)
        return Caller(operator, source_address)

    def list_cameras(self, caller: Caller, *, district_id: str = "", status: str = "",
                     near: tuple[float, float, float] | None = None,
                     limit: int = 0) -> list[CameraRecord]:
        """The camera map: positions and status only (no video), for any enabled operator."""
        return self.registry.list_cameras(district_id=district_id, status=status, near=near,
                                          limit=limit)

    # --- incidents ----------------------------------------------------------------------------

    async def report_incident(self, caller: Caller, *, incident_type: str, lat: float, lon: float,
                              radius_m: float | None = None, occurred_at: datetime | None = None,
                              external_ref: str = "", legal_basis: str | None = None,
                              service: str | None = None) -> IncidentReport:
        """Open an incident and its grant; return the cameras inside it, nearest first."""
        check_text("incident_type", incident_type, limits.NAME)
        check_text("external_ref", external_ref, limits.REFERENCE)
        check_optional("legal_basis", legal_basis, limits.PROSE)
        check_optional("service", service, limits.NAME)
        occurred_at = limits.check_occurred_at(occurred_at, self._clock())
        return await self._incident_desk.report(
            caller, incident_type=incident_type, lat=lat, lon=lon, radius_m=radius_m,
            occurred_at=occurred_at, external_ref=external_ref, legal_basis=legal_basis,
            service=service)

    def get_incident(self, caller: Caller, incident_id: str) -> IncidentReport:
        """The incident and its cameras; IncidentNotFound unless the caller may see it."""
        check_text("incident_id", incident_id, limits.ID)
        return self._incident_desk.get(caller, incident_id)

    def list_incidents(self, caller: Caller, *, include_closed: bool = False) -> list[StoredIncident]:
        """The incidents the caller may see."""
        return self._incident_desk.list_visible(caller, include_closed=include_closed)

    async def close_incident(self, caller: Caller, incident_id: str, reason: str) -> StoredIncident:
        """Close the incident; every session it backs ends at its agent within seconds."""
        check_text("incident_id", incident_id, limits.ID)
        check_text("reason", reason, limits.PROSE)
        return await self._incident_desk.close(caller, incident_id, reason)

    # --- sessions -----------------------------------------------------------------------------

    async def open_session(self, caller: Caller, camera_id: str, sdp_offer: str, *,
                           incident_id: str = "", breakglass_id: str = "") -> OpenedSession:
        """Decide, record, sign a grant, relay the offer; the answer, or AccessDenied."""
        check_text("camera_id", camera_id, limits.ID)
        check_text("incident_id", incident_id, limits.ID)
        check_text("breakglass_id", breakglass_id, limits.ID)
        camera = self.registry.camera(camera_id)
        if camera is not None:
            refusal = capacity_refusal(
                self.registry.open_sessions(), operator_id=caller.operator.operator_id,
                agency=caller.operator.agency, district_id=camera.district_id,
                standing=not incident_id and not breakglass_id, caps=self.session_caps)
            if refusal is not None:
                await self._recorder.refuse(caller, AuditAction.ACCESS_DENY, refusal,
                                            incident_id=incident_id or None)
        return await self._session_desk.open(caller, camera_id, sdp_offer,
                                             incident_id=incident_id, breakglass_id=breakglass_id)

    async def close_session(self, caller: Caller, session_id: str) -> None:
        """The viewer ends its session."""
        check_text("session_id", session_id, limits.ID)
        await self._session_desk.close(caller, session_id)

    def session_state(self, caller: Caller, session_id: str) -> SessionState:
        """Whether the caller's session is still active, and if not why it ended."""
        return self._session_desk.state(caller, session_id)

    async def revoke_session(self, caller: Caller, session_id: str, reason: str) -> None:
        """A supervisor of the session's agency ends it now."""
        check_text("session_id", session_id, limits.ID)
        check_text("reason", reason, limits.PROSE)
        await self._session_desk.revoke(caller, session_id, reason)

    async def session_ended(self, event: mqtt_pb2.SessionEvent) -> None:
        """The agent's account of a session's end: duration and bytes, for the record."""
        await self._session_desk.ended(event)

    async def agent_status_changed(self, district_id: str) -> None:
        """A district's agent went offline (its last will, or its own word): its sessions are
        over, so close them in the registry and on the record."""
        district = self.registry.district(district_id)
        if district is None or district.agent_online:
            return
        now = self._clock()
        for row in self.registry.end_district_sessions(district_id, now, AGENT_OFFLINE):
            opened = datetime.fromisoformat(str(row["opened_at"]))
            await self._recorder.record(AuditEntry(
                action=AuditAction.SESSION_CLOSE, operator_id=str(row["operator_id"]) or "unknown",
                agency=str(row["agency"]) or None, camera_ids=(str(row["camera_id"]),),
                incident_id=str(row["incident_id"]) or None, reason="agent offline",
                period_start=min(opened, now), period_end=now,
                details={"session_id": str(row["session_id"]), "district_id": district_id}))

    # --- break-glass --------------------------------------------------------------------------

    async def start_break_glass(self, caller: Caller, *, camera_ids: list[str],
                                district_ids: list[str], reason: str, minutes: int) -> BreakGlass:
        """Open a supervisor's emergency window and record it."""
        for camera_id in camera_ids:
            check_text("camera_ids", camera_id, limits.ID)
        for district_id in district_ids:
            check_text("district_ids", district_id, limits.ID)
        if len(camera_ids) + len(district_ids) > MAX_BREAK_GLASS_SCOPE:
            raise InvalidRequest(f"break-glass names at most {MAX_BREAK_GLASS_SCOPE} cameras and "
                                 "districts")
        check_text("reason", reason, limits.PROSE)
        return await self._break_glass_desk.start(caller, camera_ids=camera_ids,
                                                  district_ids=district_ids, reason=reason,
                                                  minutes=minutes)

    async def stop_break_glass(self, caller: Caller, breakglass_id: str) -> BreakGlass:
        """Stop the caller's own window early; its sessions end at once."""
        check_text("breakglass_id", breakglass_id, limits.ID)
        return await self._break_glass_desk.stop(caller, breakglass_id)

    def break_glass_review(self, since: datetime | None = None,
                           until: datetime | None = None) -> list[BreakGlass]:
        """Every window that started in [since, until)."""
        return self._break_glass_desk.review(since, until)

    # --- grants ending and the audit trail ----------------------------------------------------

    async def sweep(self) -> list[str]:
        """End every open session whose grant no longer holds; return their ids.

        Also writes the rate-limited records of failed sign-ins."""
        for entry in self.sign_in.due_records():
            await self._recorder.record(entry)
        return await self._sweeper.sweep()

    def require_auditor(self, caller: Caller) -> None:
        """AccessDenied unless the caller is an auditor (the only role that reads the log)."""
        if caller.operator.role != Role.AUDITOR:
            raise AccessDenied(denials.auditors_only(caller.operator.role))

    async def record_export(self, caller: Caller, since: datetime | None, until: datetime | None,
                            fmt: str, records: int) -> None:
        """Record an audit export the caller made."""
        await self._recorder.export_made(caller, since, until, fmt, records)
