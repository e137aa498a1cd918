"""``AccessService``: the one door every agency operation goes through.

gRPC servicers and the browser console alike call this façade, so one place authenticates,
decides with the policy, signs grants, writes the audit log, and takes access away again when a
grant ends. It builds its parts from its collaborators and hands each call to the part whose job
it is; it decides nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from cloud_core import field_limits as limits
from cloud_core.access import denials
from cloud_core.access.break_glass_desk import BreakGlassDesk
from cloud_core.access.caller import Caller
from cloud_core.access.dispatch_desk import DispatchDesk
from cloud_core.access.grant_sweeper import GrantSweeper
from cloud_core.access.incident_desk import AreaRequest, IncidentDesk, IncidentReport
from cloud_core.access.recorder import AuditRecorder
from cloud_core.access.session_desk import SessionDesk, SessionState
from cloud_core.access.trail_desk import TrailDesk
from cloud_core.audit import AuditAction, AuditEntry, AuditLog
from cloud_core.dispatch import DispatchPush
from cloud_core.exceptions import AccessDenied, InvalidRequest, SessionNotFound, Unauthenticated
from cloud_core.field_limits import check_optional, check_text
from cloud_core.golden_time import CLIENTS, FirstFrame, GoldenTimeStore
from cloud_core.grants import GrantSigner
from cloud_core.incident_events import IncidentEvents
from cloud_core.incident_trail import IncidentLink
from cloud_core.incidents import IncidentStore, StoredIncident
from cloud_core.operators import OperatorStore, claimed_operator
from cloud_core.policy import BreakGlass, Operator, Policy, Role
from cloud_core.registry import CameraRecord, Registry
from cloud_core.relays import RelayDesk
from cloud_core.session_capacity import capacity_refusal
from cloud_core.sessions import OpenedSession, SessionBroker
from cloud_core.sign_in_throttle import SignInThrottle, source_key
from cloud_core.status_ingest import AGENT_OFFLINE
from protos.safetynet.v1 import mqtt_pb2

MAX_BREAK_GLASS_SCOPE = 500
MAX_CAMERA_PAGE = 500


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AccessService:
    """Authenticate, then incidents, sessions, break-glass, ending grants and the audit trail."""

    def __init__(self, *, registry: Registry, operators: OperatorStore, incidents: IncidentStore,
                 policy: Policy, signer: GrantSigner, audit: AuditLog, sessions: SessionBroker,
                 clock: Callable[[], datetime] = _utc_now, relays: RelayDesk | None = None) -> None:
        self.registry = registry
        self.operators = operators
        self.incidents = incidents
        self.policy = policy
        self.signer = signer
        self.audit = audit
        self.sessions = sessions
        self.relays = relays  # cloud relays (docs/cloud-relay.md); None: every view is direct
        self._clock = clock
        self.sign_in = SignInThrottle()
        self.events = IncidentEvents()
        self.golden_time = GoldenTimeStore(registry.db)
        self._recorder = AuditRecorder(audit)
        self._sweeper = GrantSweeper(registry=registry, operators=operators, incidents=incidents,
                                     sessions=sessions, recorder=self._recorder, policy=policy,
                                     clock=clock)
        self._incident_desk = IncidentDesk(registry=registry, incidents=incidents, policy=policy,
                                           recorder=self._recorder, sweeper=self._sweeper,
                                           clock=clock)
        self._session_desk = SessionDesk(registry=registry, incidents=incidents, policy=policy,
                                         signer=signer, sessions=sessions,
                                         recorder=self._recorder, sweeper=self._sweeper,
                                         clock=clock, relays=relays)
        self._trail_desk = TrailDesk(incidents=incidents, policy=policy, recorder=self._recorder,
                                     sweeper=self._sweeper, incident_desk=self._incident_desk,
                                     clock=clock)
        self._dispatch_desk = DispatchDesk(
            registry=registry, operators=operators, incidents=incidents, policy=policy,
            signer=signer, sessions=sessions, recorder=self._recorder, sweeper=self._sweeper,
            incident_desk=self._incident_desk, clock=clock)
        self._break_glass_desk = BreakGlassDesk(incidents=incidents, policy=policy,
                                                recorder=self._recorder, sweeper=self._sweeper,
                                                clock=clock)

    # --- alert counts (``cloud_core.metrics``) -------------------------------------------------

    @property
    def sign_in_failures(self) -> Mapping[str, int]:
        """Wrong tokens, counted per source address and per operator the token names."""
        return self.sign_in.failures

    @property
    def sign_in_throttled(self) -> Mapping[str, int]:
        """Sign-ins refused while their source or operator had to wait."""
        return self.sign_in.throttled

    @property
    def sessions_preempted(self) -> int:
        """Standing-access sessions ended to give an emergency session a full agent's slot."""
        return self._session_desk.preempted_total

    # --- identity and cameras -----------------------------------------------------------------

    def authenticate(self, token: str, source_address: str = "") -> Caller:
        """The caller holding ``token``; raises Unauthenticated, or SignInThrottled while the
        source, or the operator the token names, must wait after failed sign-ins
        (``cloud_core.sign_in_throttle``)."""
        source = source_key(source_address)
        claimed = claimed_operator(token)
        self.sign_in.check(source, claimed)
        try:
            operator = self.operators.authenticate(token)
        except Unauthenticated:
            if token:
                self.sign_in.failed(source, claimed)
            raise
        self.sign_in.succeeded(source, operator.operator_id)
        return Caller(operator, source_address)

    def list_cameras(self, caller: Caller, *, district_id: str = "", status: str = "",
                     near: tuple[float, float, float] | None = None,
                     limit: int = 0) -> list[CameraRecord]:
        """The camera map: positions and status only (no video), for any enabled operator."""
        return self.registry.list_cameras(district_id=district_id, status=status, near=near,
                                          limit=limit)

    # --- incidents ----------------------------------------------------------------------------

    async def report_incident(self, caller: Caller, *, incident_type: str, lat: float | None,
                              lon: float | None, radius_m: float | None = None,
                              occurred_at: datetime | None = None, external_ref: str = "",
                              legal_basis: str | None = None, service: str | None = None,
                              clamp: bool = False,
                              area: AreaRequest | None = None) -> IncidentReport:
        """Open an incident and its grant; return the cameras inside it, nearest first.

        Idempotent per agency and ``external_ref``. A radius beyond the service's maximum is
        refused unless ``clamp``. ``area`` declares a polygon and/or whole districts instead of
        a radius (disaster response); the location may then be left out (the polygon's middle).
        """
        check_text("incident_type", incident_type, limits.NAME)
        check_text("external_ref", external_ref, limits.REFERENCE)
        check_optional("legal_basis", legal_basis, limits.PROSE)
        check_optional("service", service, limits.NAME)
        occurred_at = limits.check_occurred_at(occurred_at, self._clock())
        report = await self._incident_desk.report(
            caller, incident_type=incident_type, lat=lat, lon=lon, radius_m=radius_m,
            occurred_at=occurred_at, external_ref=external_ref, legal_basis=legal_basis,
            service=service, clamp=clamp, area=area)
        if not report.existing:
            self.events.publish("reported", report.incident.incident.incident_id)
        return report

    async def extend_incident(self, caller: Caller, incident_id: str, minutes: int,
                              reason: str) -> StoredIncident:
        """Extend an open incident past its time box, with a written reason (recorded)."""
        check_text("reason", reason, limits.PROSE)
        extended = await self._incident_desk.extend(caller, incident_id, minutes, reason)
        self.events.publish("extended", incident_id)
        return extended

    def incident_cameras(self, caller: Caller, incident_id: str, offset: int,
                         limit: int) -> tuple[list[CameraRecord], int]:
        """One page of the cameras the incident reaches (nearest first), and how many in all."""
        if offset < 0 or not 1 <= limit <= MAX_CAMERA_PAGE:
            raise InvalidRequest(f"offset must be >= 0 and limit 1..{MAX_CAMERA_PAGE}, "
                                 f"got {offset} and {limit}")
        cameras = self._incident_desk.get(caller, incident_id).cameras
        return cameras[offset:offset + limit], len(cameras)

    async def move_incident(self, caller: Caller, incident_id: str, lat: float, lon: float, *,
                            at: datetime | None = None,
                            source: str = "operator") -> IncidentReport:
        """A new position: the grant follows it; sessions out of reach end at once."""
        report = await self._trail_desk.move(caller, incident_id, lat, lon, at=at, source=source)
        self.events.publish("moved", incident_id)
        for link in self.incidents.trail.links(incident_id):
            if link.kind == "hand-off" and link.outgoing:
                self.events.publish("moved", link.other_id)
        return report

    async def link_incidents(self, caller: Caller, incident_id: str, other_id: str,
                             reason: str) -> tuple[StoredIncident, StoredIncident]:
        """Link two incidents; both agencies see both."""
        check_text("reason", reason, limits.PROSE)
        linked = await self._trail_desk.link(caller, incident_id, other_id, reason)
        self.events.publish("linked", incident_id)
        self.events.publish("linked", other_id)
        return linked

    async def hand_off_incident(self, caller: Caller, incident_id: str, reason: str, *,
                                incident_type: str | None = None,
                                service: str | None = None) -> IncidentReport:
        """Open (once) the linked incident of the service the policy hands this one off to."""
        check_text("reason", reason, limits.PROSE)
        report = await self._trail_desk.hand_off(caller, incident_id, reason,
                                                 incident_type=incident_type, service=service)
        if not report.existing:
            self.events.publish("reported", report.incident.incident.incident_id)
            self.events.publish("linked", incident_id)
        return report

    def incident_links(self, incident_id: str) -> list[IncidentLink]:
        """The incident's links, both directions (callers have seen the incident already)."""
        return self.incidents.trail.links(incident_id)

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
        closed = await self._incident_desk.close(caller, incident_id, reason)
        self.events.publish("closed", incident_id)
        return closed

    # --- 112 dispatch -------------------------------------------------------------------------

    async def assign_officer(self, caller: Caller, incident_id: str,
                             officer_id: str) -> list[str]:
        """The 112 room assigns a field officer; the officers now assigned."""
        officers = await self._dispatch_desk.assign(caller, incident_id, officer_id)
        self.events.publish("dispatch", incident_id)
        return officers

    async def unassign_officer(self, caller: Caller, incident_id: str,
                               officer_id: str) -> list[str]:
        """The officer's part ends; their sessions close at once."""
        officers = await self._dispatch_desk.unassign(caller, incident_id, officer_id)
        self.events.publish("dispatch", incident_id)
        return officers

    async def push_still(self, caller: Caller, incident_id: str, camera_id: str) -> DispatchPush:
        """A still taken at the camera's agent, hashed on the record, pushed to the officers."""
        push = await self._dispatch_desk.push_still(caller, incident_id, camera_id)
        self.events.publish("dispatch", incident_id)
        return push

    async def hand_off_camera(self, caller: Caller, incident_id: str,
                              camera_id: str) -> DispatchPush:
        """The assigned officers may now open ``camera_id`` live."""
        push = await self._dispatch_desk.hand_off_camera(caller, incident_id, camera_id)
        self.events.publish("dispatch", incident_id)
        return push

    def dispatch_state(self, caller: Caller,
                       incident_id: str) -> tuple[list[str], list[DispatchPush]]:
        """Officers and pushes of an incident, for its room and its assigned officers."""
        return self._dispatch_desk.state(caller, incident_id)

    def field_officers(self, caller: Caller) -> list[tuple[Operator, list[str]]]:
        """The caller's agency's field officers the room may dispatch, with their incidents."""
        return self._dispatch_desk.field_officers(caller)

    def dispatch_still(self, caller: Caller, push_id: str) -> bytes:
        """A pushed still's JPEG."""
        return self._dispatch_desk.still(caller, push_id)

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
                self.registry.open_sessions_counted_for(
                    caller.operator.operator_id, caller.operator.agency, camera.district_id),
                operator_id=caller.operator.operator_id,
                agency=caller.operator.agency, district_id=camera.district_id,
                standing=not incident_id and not breakglass_id,
                caps=self.policy.session_caps)
            if refusal is not None:
                await self._recorder.refuse(caller, AuditAction.ACCESS_DENY, refusal,
                                            incident_id=incident_id or None)
        return await self._session_desk.open(caller, camera_id, sdp_offer,
                                             incident_id=incident_id, breakglass_id=breakglass_id,
                                             camera=camera)

    def ask_relay(self, caller: Caller, incident_id: str) -> None:
        """Serve the incident's views through a cloud relay (docs/cloud-relay.md)."""
        if self.relays is None:
            raise InvalidRequest("this core runs no cloud relays (no [relays] in its config), "
                                 "so an incident cannot ask for one")
        self.relays.ask(incident_id, caller.operator.operator_id)

    def first_frame(self, caller: Caller, session_id: str, client: str) -> FirstFrame | None:
        """The caller's client decoded its first frame; recorded for incident sessions (the
        core's clock), once per session. None when there is nothing to record."""
        if client not in CLIENTS:
            raise InvalidRequest(f"client must be one of {', '.join(CLIENTS)}, got {client[:40]!r}")
        record = self.registry.session(session_id)
        if record is None or record["operator_id"] != caller.operator.operator_id:
            raise SessionNotFound(session_id)
        stored = self.incidents.get(str(record["incident_id"])) if record["incident_id"] else None
        if stored is None:
            return None
        row = FirstFrame(session_id, stored.incident.incident_id, stored.incident.service,
                         str(record["camera_id"]), stored.incident.opened_at,
                         datetime.fromisoformat(str(record["opened_at"])), self._clock(), client)
        return row if self.golden_time.record(row) else None

    async def close_session(self, caller: Caller, session_id: str) -> None:
        """The viewer ends its session."""
        check_text("session_id", session_id, limits.ID)
        await self._session_desk.close(caller, session_id)

    def session_state(self, caller: Caller, session_id: str) -> SessionState:
        """Whether the caller's session is still active, and if not why it ended."""
        check_text("session_id", session_id, limits.ID)
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
                                district_ids: list[str], reason: str, minutes: int,
                                clamp: bool = False) -> BreakGlass:
        """Open a supervisor's emergency window and record it (too long: refused unless clamp)."""
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
                                                  minutes=minutes, clamp=clamp)

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
