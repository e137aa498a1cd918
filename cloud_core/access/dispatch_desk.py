"""112 dispatch: the room assigns field officers to an incident, pushes them stills and hands
them live cameras; officers see only what they are assigned to.

A still is taken at the district's agent (one JPEG of the camera's latest key frame; no video
leaves the district), under a one-use grant signed for the still, for a camera the incident's
grant reaches. The request is on the audit record before it is relayed, and the JPEG's SHA-256
after it arrives, before any officer can fetch it. Unassigning an officer, or closing the
incident, ends their access (the sweeper closes their sessions).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog

from cloud_core.access import denials
from cloud_core.access.caller import Caller
from cloud_core.access.grant_sweeper import GrantSweeper
from cloud_core.access.incident_desk import IncidentDesk
from cloud_core.access.recorder import AuditRecorder
from cloud_core.audit import AuditAction, AuditEntry
from cloud_core.dispatch import CAMERA, MAX_STILL_BYTES, STILL, DispatchPush
from cloud_core.exceptions import AccessDenied, IncidentNotFound, InvalidRequest, SessionRejected
from cloud_core.grants import GrantSigner
from cloud_core.incidents import IncidentStore, StoredIncident
from cloud_core.operators import OperatorStore
from cloud_core.policy import (
    VIEW_ROLES,
    CameraPlace,
    Operator,
    Policy,
    Role,
    incident_reaches,
)
from cloud_core.registry import CameraRecord, Registry
from cloud_core.sessions import SessionBroker
from protos.safetynet.v1 import mqtt_pb2
from runtime.grant import GrantClaimsData

log = structlog.get_logger(__name__)

STILL_GRANT = timedelta(seconds=30)


class DispatchDesk:
    """Assignments, stills and camera hand-offs, recorded; and what an officer may see."""

    def __init__(self, *, registry: Registry, operators: OperatorStore,
                 incidents: IncidentStore, policy: Policy, signer: GrantSigner,
                 sessions: SessionBroker, recorder: AuditRecorder, sweeper: GrantSweeper,
                 incident_desk: IncidentDesk, clock: Callable[[], datetime]) -> None:
        self._registry = registry
        self._operators = operators
        self._store = incidents.dispatch
        self._incidents = incidents
        self._policy = policy
        self._signer = signer
        self._sessions = sessions
        self._recorder = recorder
        self._sweeper = sweeper
        self._desk = incident_desk
        self._clock = clock

    async def assign(self, caller: Caller, incident_id: str, officer_id: str) -> list[str]:
        """Assign a field officer of the incident's agencies; the officers now assigned."""
        stored = await self._room(caller, incident_id, AuditAction.DISPATCH_ASSIGN)
        officer = self._operators.get(officer_id)
        if officer is None or officer.role is not Role.FIELD or not officer.enabled:
            raise InvalidRequest(f"{officer_id!r} is not an enabled field officer")
        if officer.agency not in stored.incident.agencies:
            raise InvalidRequest(f"officer {officer_id} of {officer.agency} is not admitted to "
                                 f"incident {incident_id}")
        if not self._store.is_assigned(incident_id, officer_id):
            await self._recorder.record(self._entry(caller, stored, AuditAction.DISPATCH_ASSIGN,
                                                    {"officer_id": officer_id}))
            self._store.assign(incident_id, officer_id, caller.operator.operator_id,
                               self._clock())
        return self._store.officers(incident_id)

    async def unassign(self, caller: Caller, incident_id: str, officer_id: str) -> list[str]:
        """End an officer's part in the incident; their sessions end at once."""
        stored = await self._room(caller, incident_id, AuditAction.DISPATCH_UNASSIGN)
        if not self._store.is_assigned(incident_id, officer_id):
            raise InvalidRequest(f"officer {officer_id} is not assigned to {incident_id}")
        await self._recorder.record(self._entry(caller, stored, AuditAction.DISPATCH_UNASSIGN,
                                                {"officer_id": officer_id}))
        self._store.unassign(incident_id, officer_id)
        await self._sweeper.sweep()
        return self._store.officers(incident_id)

    async def push_still(self, caller: Caller, incident_id: str, camera_id: str) -> DispatchPush:
        """Take a still at the camera's agent, hash it on the record, keep it for the officers."""
        stored = await self._room(caller, incident_id, AuditAction.DISPATCH_STILL)
        camera = await self._reached(caller, stored, camera_id, AuditAction.DISPATCH_STILL)
        push_id, now = self._store.new_push_id(), self._clock()
        await self._recorder.record(self._entry(
            caller, stored, AuditAction.DISPATCH_STILL,
            {"push_id": push_id, "phase": "requested"}, camera_id))
        grant = self._signer.sign(GrantClaimsData(
            session_id=push_id, camera_id=camera.camera_id, district_id=camera.district_id,
            operator_id=caller.operator.operator_id, agency=caller.operator.agency,
            incident_id=incident_id, purpose=stored.incident.purpose, not_before=now,
            expires_at=now + STILL_GRANT))
        request = mqtt_pb2.SignalRequest(still=mqtt_pb2.StillRequest(
            still_id=push_id, camera_id=camera.camera_id, grant=grant))
        response = await self._sessions.relay(camera.district_id, request)
        if response.WhichOneof("result") != "still_jpeg" or not response.still_jpeg:
            failure = response.error
            raise SessionRejected(failure.code or mqtt_pb2.SIGNAL_ERROR_INTERNAL,
                                  failure.message or "the agent sent no still")
        jpeg = bytes(response.still_jpeg)
        if len(jpeg) > MAX_STILL_BYTES or not jpeg.startswith(b"\xff\xd8"):
            raise SessionRejected(mqtt_pb2.SIGNAL_ERROR_INTERNAL, "the agent's still is no JPEG")
        push = DispatchPush(push_id, incident_id, STILL, camera.camera_id,
                            hashlib.sha256(jpeg).hexdigest(), len(jpeg), self._clock(),
                            caller.operator.operator_id)
        await self._recorder.record(self._entry(
            caller, stored, AuditAction.DISPATCH_STILL,
            {"push_id": push_id, "phase": "taken", "sha256": push.sha256, "bytes": push.bytes},
            camera_id))
        self._store.add_push(push, jpeg)
        log.info("still pushed", incident=incident_id, camera=camera_id, bytes=push.bytes)
        return push

    async def hand_off_camera(self, caller: Caller, incident_id: str,
                              camera_id: str) -> DispatchPush:
        """Let the incident's assigned officers open ``camera_id`` live."""
        stored = await self._room(caller, incident_id, AuditAction.DISPATCH_CAMERA)
        camera = await self._reached(caller, stored, camera_id, AuditAction.DISPATCH_CAMERA)
        push = DispatchPush(self._store.new_push_id(), incident_id, CAMERA, camera.camera_id,
                            "", 0, self._clock(), caller.operator.operator_id)
        await self._recorder.record(self._entry(caller, stored, AuditAction.DISPATCH_CAMERA,
                                                {"push_id": push.push_id}, camera_id))
        self._store.add_push(push)
        return push

    def state(self, caller: Caller, incident_id: str) -> tuple[list[str], list[DispatchPush]]:
        """Assigned officers and pushes, for the room and for the assigned officers only."""
        stored = self._incidents.get(incident_id)
        if stored is None or not self._desk.visible(caller, stored):
            raise IncidentNotFound(incident_id)
        return self._store.officers(incident_id), self._store.pushes(incident_id)

    def field_officers(self, caller: Caller) -> list[tuple[Operator, list[str]]]:
        """The room's own agency's enabled field officers, each with the incidents they are on."""
        if caller.operator.role not in VIEW_ROLES:
            raise AccessDenied(f"role {caller.operator.role} does not dispatch officers")
        return [(o, self._store.incidents_of(o.operator_id))
                for o in self._operators.list_all()
                if o.role is Role.FIELD and o.enabled and o.agency == caller.operator.agency]

    def still(self, caller: Caller, push_id: str) -> bytes:
        """A pushed still's JPEG for a caller who may see its incident."""
        found = self._store.still(push_id)
        if found is None:
            raise IncidentNotFound(push_id)
        push, jpeg = found
        self.state(caller, push.incident_id)
        return jpeg

    async def _room(self, caller: Caller, incident_id: str,
                    action: AuditAction) -> StoredIncident:
        """The open incident, if the caller works in the room of an agency it admits."""
        stored = self._incidents.get(incident_id)
        if stored is None or not self._desk.visible(caller, stored):
            raise IncidentNotFound(incident_id)
        operator = caller.operator
        if operator.role not in VIEW_ROLES or operator.agency not in stored.incident.agencies:
            await self._recorder.refuse(caller, action, denials.may_not_change(
                operator.operator_id, incident_id), incident_id=incident_id)
        now = self._clock()
        if stored.incident.is_closed(now) or now >= stored.incident.expires_at:
            raise InvalidRequest(f"incident {incident_id} is no longer open")
        return stored

    async def _reached(self, caller: Caller, stored: StoredIncident, camera_id: str,
                       action: AuditAction) -> CameraRecord:
        camera = self._registry.camera(camera_id)
        now = self._clock()
        if camera is None or not incident_reaches(
                self._policy, stored.incident,
                CameraPlace(camera.camera_id, camera.district_id, camera.lat, camera.lon), now):
            reason = (f"camera {camera_id} is not within incident "
                      f"{stored.incident.incident_id}'s grant")
            await self._recorder.refuse(caller, action, reason,
                                        incident_id=stored.incident.incident_id)
        if camera is None:  # refuse() raised; this is for the type checker
            raise AccessDenied("unknown camera")
        return camera

    @staticmethod
    def _entry(caller: Caller, stored: StoredIncident, action: AuditAction,
               details: dict[str, object], camera_id: str | None = None) -> AuditEntry:
        operator, incident = caller.operator, stored.incident
        return AuditEntry(
            action=action, operator_id=operator.operator_id, agency=operator.agency,
            source_address=caller.source_address or None, incident_id=incident.incident_id,
            camera_ids=(camera_id,) if camera_id else (), purpose=incident.purpose,
            legal_basis=incident.legal_basis, details=details)
