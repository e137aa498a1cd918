"""Viewer sessions: decide a view, record it, sign its grant, broker it; then close, show, revoke.

The order of ``open`` is the design's fail-closed order: the decision is written to the audit log
before a grant is signed or anything is relayed to an agent.

Emergency priority: when the camera's agent refuses an incident or break-glass session because
its viewer slots are all taken, the desk records a ``session.preempt`` naming both sessions,
ends the youngest standing-access session on that agent (its viewer is told "preempted by
incident …") and offers again, a few times at most (``cloud_core.session_capacity``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import structlog

from cloud_core.access import denials
from cloud_core.access.caller import Caller
from cloud_core.access.grant_sweeper import GrantSweeper
from cloud_core.access.recorder import AuditRecorder
from cloud_core.audit import AuditAction, AuditEntry, AuditOutcome
from cloud_core.exceptions import (
    AccessDenied,
    CameraNotFound,
    InvalidRequest,
    SessionNotFound,
    SessionRejected,
)
from cloud_core.grants import GrantSigner
from cloud_core.incidents import IncidentStore
from cloud_core.policy import CameraPlace, Decision, Incident, Policy, Role, decide_view
from cloud_core.registry import CameraRecord, Registry
from cloud_core.relays import RelayDesk, ViewerOffer, direct_route
from cloud_core.session_capacity import PREEMPTING_BASES, preemption_reason, preemption_victim
from cloud_core.sessions import InvalidOffer, OpenedSession, SessionBroker, check_offer
from protos.safetynet.v1 import mqtt_pb2
from runtime.grant import GrantClaimsData

log = structlog.get_logger(__name__)

MAX_PREEMPTIONS = 3
"""Standing sessions one emergency offer may end before it gives up (another standing
session may take a freed slot between the close and the new offer)."""


@dataclass(frozen=True)
class SessionState:
    """A session as its viewer sees it: still active, or why it ended."""

    session_id: str
    camera_id: str
    active: bool
    reason: str            # why it ended ("incident closed", "expired", …); empty while active
    expires_at: datetime


class SessionDesk:
    """Opens, closes, shows and revokes viewer sessions, and records the agent's account of them."""

    def __init__(self, *, registry: Registry, incidents: IncidentStore, policy: Policy,
                 signer: GrantSigner, sessions: SessionBroker, recorder: AuditRecorder,
                 sweeper: GrantSweeper, clock: Callable[[], datetime],
                 relays: RelayDesk | None = None) -> None:
        self._registry = registry
        self._relays = relays  # routes a view to a cloud relay when one should serve it
        self._incidents = incidents
        self._policy = policy
        self._signer = signer
        self._sessions = sessions
        self._recorder = recorder
        self._sweeper = sweeper
        self._clock = clock
        self.preempted_total = 0

    async def open(self, caller: Caller, camera_id: str, sdp_offer: str, *,
                   incident_id: str = "", breakglass_id: str = "",
                   camera: CameraRecord | None = None) -> OpenedSession:
        """Decide, record, sign a grant, relay the offer; the answer, or AccessDenied.

        ``camera``: the camera's row as the caller just read it (one read per call, not three).
        """
        try:
            check_offer(sdp_offer)
        except InvalidOffer as exc:
            raise InvalidRequest(str(exc)) from exc
        if camera is None or camera.camera_id != camera_id:
            camera = self._registry.camera(camera_id)
        decision, public_reason = self._decide(caller, camera, incident_id, breakglass_id)
        now = self._clock()
        session_id = SessionBroker.new_session_id()
        await self._recorder.record(
            _decision_entry(caller, camera_id, decision, now, session_id, incident_id,
                            breakglass_id))
        if not decision.allowed or camera is None or decision.expires_at is None:
            raise AccessDenied(public_reason)
        operator = caller.operator
        grant = self._signer.sign(GrantClaimsData(
            session_id=session_id, camera_id=camera.camera_id, district_id=camera.district_id,
            operator_id=operator.operator_id, agency=operator.agency,
            incident_id=decision.incident_id or "", purpose=decision.purpose,
            not_before=now, expires_at=decision.expires_at))
        record = {"operator_id": operator.operator_id, "agency": operator.agency,
                  "incident_id": decision.incident_id or "",
                  "breakglass_id": decision.breakglass_id or "", "basis": decision.basis.value}
        route = self._relays.route if self._relays is not None else direct_route
        view = ViewerOffer(camera=camera, sdp_offer=sdp_offer, grant=grant, session_id=session_id,
                           expires_at=decision.expires_at, incident_id=decision.incident_id or "",
                           record=record)
        preempted: list[str] = []
        while True:
            try:
                opened = await route(view, self._sessions)
                break
            except CameraNotFound as exc:  # vanished between decision and relay
                raise AccessDenied(public_reason) from exc
            except SessionRejected as exc:
                if (exc.code != mqtt_pb2.SIGNAL_ERROR_CAPACITY
                        or decision.basis not in PREEMPTING_BASES
                        or len(preempted) >= MAX_PREEMPTIONS
                        or not await self._preempt(caller, camera, decision, session_id,
                                                   preempted)):
                    raise
        await self._recorder.record(
            _opened_entry(caller, camera, decision, now, session_id, opened))
        return opened

    async def _preempt(self, caller: Caller, camera: CameraRecord, decision: Decision,
                       session_id: str, preempted: list[str]) -> bool:
        """End a standing-access session on the camera's full agent for emergency session
        ``session_id``, on the record first; False when there is none to end."""
        victim = preemption_victim(self._registry.open_sessions(),
                                   district_id=camera.district_id,
                                   skip={*preempted, *self._sweeper.revoking})
        if victim is None:
            log.warning("agent full, no standing session to preempt", district=camera.district_id,
                        session=session_id)
            return False
        victim_id = str(victim["session_id"])
        preempted.append(victim_id)
        reason = preemption_reason(incident_id=decision.incident_id or "",
                                   breakglass_id=decision.breakglass_id or "",
                                   session_id=session_id)
        operator = caller.operator
        await self._recorder.record(AuditEntry(
            action=AuditAction.SESSION_PREEMPT, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            camera_ids=tuple(dict.fromkeys((camera.camera_id, str(victim["camera_id"])))),
            incident_id=decision.incident_id, purpose=decision.purpose,
            legal_basis=decision.legal_basis, reason=reason,
            details={"session_id": session_id, "preempted_session_id": victim_id,
                     "preempted_operator": str(victim["operator_id"]),
                     "preempted_agency": str(victim["agency"]),
                     "preempted_camera_id": str(victim["camera_id"]),
                     "district_id": camera.district_id, "basis": decision.basis.value,
                     **({"breakglass_id": decision.breakglass_id}
                        if decision.breakglass_id else {})}))
        log.info("standing session preempted", district=camera.district_id,
                 session=session_id, preempted=victim_id)
        self.preempted_total += 1
        await self._sweeper.revoke(victim, reason)
        return True

    async def close(self, caller: Caller, session_id: str) -> None:
        """The viewer ends its own session (or a supervisor one of the agency's)."""
        operator = caller.operator
        await self._sessions.close(
            session_id, "closed by viewer", operator_id=operator.operator_id,
            agency=operator.agency if operator.role == Role.SUPERVISOR else None)

    def state(self, caller: Caller, session_id: str) -> SessionState:
        """Whether the session is still active, and if not why it ended."""
        record = self._session(caller, session_id)
        return SessionState(
            session_id=session_id, camera_id=str(record["camera_id"]),
            active=record["closed_at"] is None, reason=str(record["close_reason"] or ""),
            expires_at=datetime.fromisoformat(str(record["expires_at"])))

    async def revoke(self, caller: Caller, session_id: str, reason: str) -> None:
        """A supervisor of the session's agency ends it now, on the record."""
        operator = caller.operator
        record = self._registry.session(session_id)
        if record is None or record["closed_at"] is not None:
            raise SessionNotFound(session_id)
        if operator.role != Role.SUPERVISOR or operator.agency not in (record["agency"],):
            await self._recorder.refuse(caller, AuditAction.GRANT_REVOKE,
                                        denials.REVOKE_NEEDS_SUPERVISOR)
        await self._sweeper.revoke(
            record, f"revoked by {operator.operator_id}: {reason or 'no reason given'}",
            by=operator)

    async def ended(self, event: mqtt_pb2.SessionEvent) -> None:
        """The agent's account of a session's end: duration and bytes, for the record."""
        record = self._registry.session(event.session_id)
        if record is None:
            return
        ended = event.at.ToDatetime(tzinfo=UTC)
        relay_id = str(record["relay_id"])
        started = datetime.fromisoformat(str(record["opened_at"]))
        await self._recorder.record(AuditEntry(
            action=AuditAction.SESSION_CLOSE, operator_id=str(record["operator_id"]) or "unknown",
            agency=str(record["agency"]) or None, camera_ids=(str(record["camera_id"]),),
            incident_id=str(record["incident_id"]) or None, reason=event.reason,
            period_start=min(started, ended), period_end=ended,
            details={"session_id": event.session_id, "district_id": str(record["district_id"]),
                     "duration_seconds": round(event.duration_seconds, 3),
                     "bytes_sent": event.bytes_sent, **_via(relay_id)}))

    def _decide(self, caller: Caller, camera: CameraRecord | None, incident_id: str,
                breakglass_id: str) -> tuple[Decision, str]:
        """The policy's decision, and the reason the caller may be told."""
        now = self._clock()
        incident = None
        if incident_id:
            stored = self._incidents.get(incident_id)
            if stored is None:
                audit_reason, public_reason = denials.missing_incident(incident_id)
                return Decision.deny(audit_reason), public_reason
            incident = stored.incident
        window = None
        if breakglass_id:
            window = self._incidents.break_glass(breakglass_id)
            if window is None:
                audit_reason, public_reason = denials.missing_break_glass(breakglass_id)
                return Decision.deny(audit_reason), public_reason
        viewer = caller.operator
        if camera is None:
            decision = Decision.deny(denials.UNKNOWN_CAMERA)
        elif viewer.role is Role.FIELD and not self._handed_off(viewer.operator_id, incident,
                                                                camera.camera_id):
            return Decision.deny(denials.NOT_HANDED_OFF), denials.NOT_HANDED_OFF
        else:
            if viewer.role is Role.FIELD:  # assigned, and the room handed this camera off
                viewer = replace(viewer, role=Role.OPERATOR)
            place = CameraPlace(camera.camera_id, camera.district_id, camera.lat, camera.lon)
            decision = decide_view(self._policy, viewer, place, incident, now, window)
        if decision.allowed:
            return decision, decision.reason
        return decision, denials.view_refused(caller.operator, incident, window, decision,
                                              self._clock())

    def _handed_off(self, officer_id: str, incident: Incident | None, camera_id: str) -> bool:
        """Whether the 112 room assigned the officer and handed them this camera."""
        dispatch = self._incidents.dispatch
        return (incident is not None
                and dispatch.is_assigned(incident.incident_id, officer_id)
                and dispatch.handed_off(incident.incident_id, camera_id))

    def _session(self, caller: Caller, session_id: str) -> dict[str, object]:
        """The session's row if the caller opened it or supervises its agency."""
        record = self._registry.session(session_id)
        operator = caller.operator
        if record is None or not (
                record["operator_id"] == operator.operator_id
                or (operator.role == Role.SUPERVISOR and record["agency"] == operator.agency)):
            raise SessionNotFound(session_id)
        return record


def _decision_entry(caller: Caller, camera_id: str, decision: Decision, now: datetime,
                    session_id: str, incident_id: str, breakglass_id: str) -> AuditEntry:
    """The ``access.grant`` / ``access.deny`` record of one decision."""
    operator = caller.operator
    return AuditEntry(
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


def _opened_entry(caller: Caller, camera: CameraRecord, decision: Decision, now: datetime,
                  session_id: str, opened: OpenedSession) -> AuditEntry:
    """The ``session.open`` record, once the agent has answered."""
    operator = caller.operator
    return AuditEntry(
        action=AuditAction.SESSION_OPEN, operator_id=operator.operator_id,
        agency=operator.agency, source_address=caller.source_address or None,
        camera_ids=(camera.camera_id,), incident_id=decision.incident_id,
        purpose=decision.purpose, legal_basis=decision.legal_basis,
        period_start=now, period_end=opened.expires_at,
        details={"session_id": session_id, "district_id": camera.district_id,
                 "basis": decision.basis.value, **_via(opened.via_relay)})


def _via(relay_id: str) -> dict[str, object]:
    """What a record says of a view a cloud relay served (nothing for a direct one)."""
    return {"via": "relay", "relay_id": relay_id} if relay_id else {}
