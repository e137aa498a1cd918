"""Evidence clips seen from the core: decide, record, ask the agent, relay an export.

The clip itself never lives here. The core decides who may preserve a camera's video (an open
incident that covers the camera, a role the policy's ``[evidence]`` allows), writes that decision
to the audit chain before the agent hears of it, signs a grant for the clip, and asks the
district's agent over MQTT signalling. The agent's signed manifest hash goes on the chain when the
clip is sealed; its purge at the end of retention does too. An export is the one time video bytes
cross the core: only to an agency admitted to the incident while its grant holds, every chunk
checked against the manifest the chain recorded, and the export itself recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from cloud_core.access import AccessService, Caller
from cloud_core.audit import AuditAction, AuditEntry, AuditOutcome
from cloud_core.exceptions import AccessDenied, AgentUnavailable, AuditError, InvalidRequest
from cloud_core.policy import Basis, CameraPlace, Decision, Role, decide_view
from cloud_core.registry import CameraRecord
from cloud_core.signalling import SignallingTransport
from cloud_core.storage.database import Database
from protos.safetynet.v1 import mqtt_pb2
from runtime.grant import GrantClaimsData

log = structlog.get_logger(__name__)

CHUNK_BYTES = 256 * 1024
MANIFEST = "manifest.json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS evidence_clips (
    clip_id TEXT PRIMARY KEY, camera_id TEXT NOT NULL, district_id TEXT NOT NULL,
    incident_id TEXT NOT NULL, operator_id TEXT NOT NULL, agency TEXT NOT NULL,
    state TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, expires_at TEXT,
    hold_until TEXT, manifest_sha256 TEXT, agent_key_id TEXT, agent_public_key TEXT,
    segments TEXT NOT NULL DEFAULT '[]', end_reason TEXT NOT NULL DEFAULT '')
"""


class EvidenceRejected(Exception):
    """The agent refused an evidence request with ``code`` (``cloud_core.signalling_errors``)."""

    def __init__(self, code: mqtt_pb2.EvidenceError, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ClipNotFound(Exception):
    def __init__(self, clip_id: str) -> None:
        super().__init__(f"no evidence clip {clip_id!r} that you may see")
        self.clip_id = clip_id


@dataclass(frozen=True)
class ClipRow:
    clip_id: str
    camera_id: str
    district_id: str
    incident_id: str
    operator_id: str
    agency: str
    state: str
    started_at: str
    ended_at: str | None
    expires_at: str | None
    hold_until: str | None
    manifest_sha256: str | None
    agent_key_id: str | None
    agent_public_key: str | None
    segments: str
    end_reason: str

    @property
    def segment_list(self) -> list[dict[str, object]]:
        value: list[dict[str, object]] = json.loads(self.segments)
        return value


_CLIP_FIELDS = tuple(field.name for field in dataclasses.fields(ClipRow))
_CLIP_COLUMNS = ", ".join(_CLIP_FIELDS)


class ClipStore:
    """The core's record of each clip (the clip itself stays at the district).

    Every replica hears an agent's seal and purge; :meth:`transition` lets exactly one of them
    (and one of a stop's reply and the agent's event) move a clip on, so its hash goes on the
    chain once."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._db.schema(_SCHEMA)

    def add(self, row: ClipRow) -> None:
        self._db.execute(f"INSERT INTO evidence_clips ({_CLIP_COLUMNS}) "
                         f"VALUES ({', '.join('?' * len(_CLIP_FIELDS))})",
                         dataclasses.astuple(row))

    def get(self, clip_id: str) -> ClipRow | None:
        row = self._db.execute(f"SELECT {_CLIP_COLUMNS} FROM evidence_clips WHERE clip_id = ?",
                               [clip_id]).fetchone()
        return ClipRow(*row) if row else None

    def of_incident(self, incident_id: str = "") -> list[ClipRow]:
        """The incident's clips (every clip if ``incident_id`` is empty), oldest first."""
        where, params = ("WHERE incident_id = ?", [incident_id]) if incident_id else ("", [])
        return [ClipRow(*r) for r in self._db.execute(
            f"SELECT {_CLIP_COLUMNS} FROM evidence_clips {where} ORDER BY started_at", params)]

    def update(self, clip_id: str, **values: object) -> None:
        self.transition(clip_id, (), **values)

    def transition(self, clip_id: str, states: tuple[str, ...], **values: object) -> bool:
        """Set ``values`` if the clip is in one of ``states`` (any state if empty); True when
        this call changed it."""
        unknown = set(values) - set(_CLIP_FIELDS)
        if unknown or not values:
            raise ValueError(f"not columns of evidence_clips: {sorted(unknown)}")
        columns = ", ".join(f"{name} = ?" for name in values)
        guard = f" AND state IN ({', '.join('?' * len(states))})" if states else ""
        cursor = self._db.execute(
            f"UPDATE evidence_clips SET {columns} WHERE clip_id = ?{guard}",
            [*values.values(), clip_id, *states])
        return cursor.rowcount > 0


class EvidenceCustody:
    def __init__(self, access: AccessService, relay: SignallingTransport, db: Database,
                 *, timeout: float = 10.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._access = access
        self._relay = relay
        self._clips = ClipStore(db)
        self._timeout = timeout
        self._clock = clock

    # --- storage ------------------------------------------------------------------------------

    def clip(self, clip_id: str) -> ClipRow | None:
        return self._clips.get(clip_id)

    def clips(self, incident_id: str = "") -> list[ClipRow]:
        return self._clips.of_incident(incident_id)

    def visible(self, caller: Caller, clip_id: str) -> ClipRow:
        row = self.clip(clip_id)
        operator = caller.operator
        if row is None or operator.role == Role.AUDITOR:
            raise ClipNotFound(clip_id)
        incident = self._access.incidents.get(row.incident_id)
        if row.agency != operator.agency and (
                incident is None or operator.agency not in incident.incident.agencies):
            raise ClipNotFound(clip_id)
        return row

    async def _record(self, entry: AuditEntry) -> None:
        try:
            await self._access.audit.append(entry)
        except AuditError as exc:
            log.error("audit log unavailable, refusing", error=str(exc), action=entry.action.value)
            raise AccessDenied("the audit log cannot be written; access is refused until it can") \
                from exc

    async def _deny(self, caller: Caller, action: AuditAction, reason: str, *,
                    incident_id: str | None = None, camera_ids: tuple[str, ...] = ()) -> None:
        await self._record(AuditEntry(
            action=action, operator_id=caller.operator.operator_id, agency=caller.operator.agency,
            source_address=caller.source_address or None, incident_id=incident_id,
            camera_ids=camera_ids, outcome=AuditOutcome.DENIED, reason=reason))
        raise AccessDenied(reason)

    async def _ask(self, district_id: str, request: mqtt_pb2.SignalRequest) -> mqtt_pb2.EvidenceReply:
        response = await self._relay.request(district_id, request, self._timeout)
        if response.WhichOneof("result") == "error":  # an agent without evidence support
            raise EvidenceRejected(mqtt_pb2.EVIDENCE_ERROR_INTERNAL, response.error.message)
        reply = response.evidence
        if reply.WhichOneof("result") == "error":
            raise EvidenceRejected(reply.error.code, reply.error.message)
        return reply

    # --- preserve -----------------------------------------------------------------------------

    async def preserve(self, caller: Caller, incident_id: str, camera_ids: list[str],
                       max_seconds: float = 0.0) -> list[ClipRow]:
        """Start a clip of each camera; all are checked (and refusals recorded) before any starts."""
        rules = self._access.policy.evidence
        operator = caller.operator
        if not incident_id:
            raise InvalidRequest("evidence is preserved under an incident: give its id")
        if not camera_ids or len(set(camera_ids)) != len(camera_ids) or len(camera_ids) > 32:
            raise InvalidRequest("name 1 to 32 distinct cameras")
        max_seconds = max_seconds or float(rules.max_clip_seconds)
        if not 0 < max_seconds <= rules.max_clip_seconds:
            raise InvalidRequest(f"a clip lasts at most {rules.max_clip_seconds} s (policy "
                                 f"[evidence] max_clip_seconds), asked {max_seconds:g} s")
        if operator.role not in rules.roles or not operator.enabled:
            await self._deny(caller, AuditAction.EVIDENCE_PRESERVE,
                             f"role {operator.role} may not preserve evidence",
                             incident_id=incident_id, camera_ids=tuple(camera_ids))
        stored = self._access.incidents.get(incident_id)
        now = self._clock()
        places = []
        for camera_id in camera_ids:
            camera = self._access.registry.camera(camera_id)
            decision = None
            if camera is not None and stored is not None:
                place = CameraPlace(camera.camera_id, camera.district_id, camera.lat, camera.lon)
                decision = decide_view(self._access.policy, operator, place, stored.incident, now)
            if camera is None or decision is None or not decision.allowed \
                    or decision.basis is not Basis.INCIDENT:
                await self._deny(
                    caller, AuditAction.EVIDENCE_PRESERVE,
                    f"camera {camera_id} is unknown or outside incident {incident_id}'s grant "
                    "for your agency", incident_id=incident_id, camera_ids=(camera_id,))
            assert camera is not None and decision is not None
            if not camera.agent_online:
                raise AgentUnavailable(camera.district_id, "its agent is offline")
            places.append((camera, decision))
        return [await self._start(caller, camera, decision, incident_id, max_seconds, now)
                for camera, decision in places]

    async def _start(self, caller: Caller, camera: CameraRecord, decision: Decision,
                     incident_id: str, max_seconds: float, now: datetime) -> ClipRow:
        operator = caller.operator
        clip_id = f"clip-{uuid.uuid4().hex[:20]}"
        retention = self._access.policy.evidence.retention_days
        await self._record(AuditEntry(
            action=AuditAction.EVIDENCE_PRESERVE, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            camera_ids=(camera.camera_id,), incident_id=incident_id, purpose=decision.purpose,
            legal_basis=decision.legal_basis, period_start=now,
            period_end=now + timedelta(seconds=max_seconds),
            details={"clip_id": clip_id, "district_id": camera.district_id,
                     "max_seconds": max_seconds, "retention_days": retention}))
        grant = self._access.signer.sign(GrantClaimsData(
            session_id=clip_id, camera_id=camera.camera_id, district_id=camera.district_id,
            operator_id=operator.operator_id, agency=operator.agency, incident_id=incident_id,
            purpose=f"evidence: {decision.purpose}", not_before=now,
            expires_at=now + timedelta(minutes=5)))
        start = mqtt_pb2.EvidenceStart(
            clip_id=clip_id, camera_id=camera.camera_id, incident_id=incident_id,
            operator_id=operator.operator_id, agency=operator.agency, max_seconds=max_seconds,
            retention_days=retention, grant=grant)
        try:
            reply = await self._ask(camera.district_id,
                                    mqtt_pb2.SignalRequest(evidence_start=start))
        except EvidenceRejected as exc:
            # The request is on the record; so is the agent's refusal, so no clip looks started.
            await self._record(AuditEntry(
                action=AuditAction.EVIDENCE_PRESERVE, operator_id=operator.operator_id,
                agency=operator.agency, source_address=caller.source_address or None,
                camera_ids=(camera.camera_id,), incident_id=incident_id,
                outcome=AuditOutcome.DENIED, reason=f"the agent refused: {exc.message}",
                details={"clip_id": clip_id, "district_id": camera.district_id}))
            raise
        self._clips.add(ClipRow(
            clip_id=clip_id, camera_id=camera.camera_id, district_id=camera.district_id,
            incident_id=incident_id, operator_id=operator.operator_id, agency=operator.agency,
            state="recording", started_at=now.isoformat(), ended_at=None,
            expires_at=reply.clip.expires_at.ToDatetime(tzinfo=UTC).isoformat(),
            hold_until=None, manifest_sha256=None, agent_key_id=reply.clip.agent_key_id,
            agent_public_key=reply.clip.agent_public_key.hex(), segments="[]", end_reason=""))
        row = self.clip(clip_id)
        assert row is not None
        return row

    # --- stop, seal, hold, purge --------------------------------------------------------------

    async def stop(self, caller: Caller, clip_id: str) -> ClipRow:
        row = self.visible(caller, clip_id)
        if row.state != "recording":
            raise InvalidRequest(f"clip {clip_id} is {row.state}, not recording")
        stop = mqtt_pb2.EvidenceStop(clip_id=clip_id,
                                     reason=f"stopped by {caller.operator.operator_id}")
        reply = await self._ask(row.district_id, mqtt_pb2.SignalRequest(evidence_stop=stop))
        await self.sealed(row.district_id, reply.clip)
        updated = self.clip(clip_id)
        assert updated is not None
        return updated

    async def sealed(self, district_id: str, clip: mqtt_pb2.EvidenceClip) -> None:
        """The agent's signed manifest: its hash goes on the chain, once."""
        row = self.clip(clip.clip_id)
        if row is None or row.district_id != district_id:
            log.warning("evidence seal for unknown clip ignored", district=district_id,
                        clip=clip.clip_id)
            return
        if row.state != "recording" or clip.state != "sealed" or not clip.manifest_sha256:
            return
        segments = [{"file": s.file, "sha256": s.sha256, "bytes": s.bytes} for s in clip.segments]
        seal = {"state": "sealed", "manifest_sha256": clip.manifest_sha256,
                "ended_at": clip.ended_at.ToDatetime(tzinfo=UTC).isoformat(),
                "segments": json.dumps(segments), "end_reason": clip.end_reason,
                "agent_key_id": clip.agent_key_id,
                "agent_public_key": clip.agent_public_key.hex()}
        if not self._clips.transition(clip.clip_id, ("recording",), **seal):
            return  # another replica, or the stop's own reply, sealed it first
        try:
            await self._record(AuditEntry(
                action=AuditAction.EVIDENCE_SEAL, operator_id=f"agent:{district_id}",
                camera_ids=(row.camera_id,), incident_id=row.incident_id, reason=clip.end_reason,
                period_start=clip.started_at.ToDatetime(tzinfo=UTC),
                period_end=max(clip.ended_at.ToDatetime(tzinfo=UTC),
                               clip.started_at.ToDatetime(tzinfo=UTC)),
                details={"clip_id": clip.clip_id, "manifest_sha256": clip.manifest_sha256,
                         "agent_key_id": clip.agent_key_id, "segments": len(segments),
                         "segment_sha256": [s["sha256"] for s in segments],
                         **({"truncated_by_crash": True} if clip.truncated_by_crash else {})}))
        except BaseException:
            self._clips.update(clip.clip_id, **{name: getattr(row, name) for name in seal})
            raise
        log.info("evidence clip sealed", clip=clip.clip_id, manifest=clip.manifest_sha256)

    async def purged(self, district_id: str, clip: mqtt_pb2.EvidenceClip) -> None:
        row = self.clip(clip.clip_id)
        if row is None or row.district_id != district_id or row.state == "purged":
            return
        if not self._clips.transition(clip.clip_id, ("recording", "sealed"), state="purged"):
            return  # another replica recorded the purge
        try:
            await self._record(AuditEntry(
                action=AuditAction.EVIDENCE_PURGE, operator_id=f"agent:{district_id}",
                camera_ids=(row.camera_id,), incident_id=row.incident_id, reason=clip.end_reason,
                details={"clip_id": row.clip_id, "manifest_sha256": row.manifest_sha256 or ""}))
        except BaseException:
            self._clips.update(clip.clip_id, state=row.state)
            raise

    def handle_event(self, district_id: str, payload: bytes) -> mqtt_pb2.EvidenceEvent | None:
        try:
            event = mqtt_pb2.EvidenceEvent.FromString(payload)
        except DecodeError as exc:
            log.warning("rejected malformed evidence event", district=district_id, error=str(exc))
            return None
        return event

    async def on_event(self, district_id: str, payload: bytes) -> None:
        event = self.handle_event(district_id, payload)
        if event is None:
            return
        if event.kind == mqtt_pb2.EvidenceEvent.KIND_SEALED:
            await self.sealed(district_id, event.clip)
        elif event.kind == mqtt_pb2.EvidenceEvent.KIND_PURGED:
            await self.purged(district_id, event.clip)

    async def hold(self, caller: Caller, clip_id: str, until: datetime, reason: str) -> ClipRow:
        row = self.visible(caller, clip_id)
        if caller.operator.role != Role.SUPERVISOR:
            await self._deny(caller, AuditAction.EVIDENCE_HOLD,
                             "only a supervisor may place a legal hold",
                             incident_id=row.incident_id, camera_ids=(row.camera_id,))
        if until <= self._clock() or not reason.strip():
            raise InvalidRequest("a legal hold needs a future end and a reason")
        await self._record(AuditEntry(
            action=AuditAction.EVIDENCE_HOLD, operator_id=caller.operator.operator_id,
            agency=caller.operator.agency, source_address=caller.source_address or None,
            camera_ids=(row.camera_id,), incident_id=row.incident_id, reason=reason,
            details={"clip_id": clip_id, "hold_until": until.isoformat()}))
        hold = mqtt_pb2.EvidenceHold(clip_id=clip_id)
        hold.hold_until.FromDatetime(until)
        reply = await self._ask(row.district_id, mqtt_pb2.SignalRequest(evidence_hold=hold))
        self._clips.update(clip_id, hold_until=until.isoformat(),
                           expires_at=reply.clip.expires_at.ToDatetime(tzinfo=UTC).isoformat())
        updated = self.clip(clip_id)
        assert updated is not None
        return updated

    # --- export -------------------------------------------------------------------------------

    async def export(self, caller: Caller, clip_id: str) -> AsyncIterator[tuple[str, int, bytes]]:
        """The sealed clip's files as (name, offset, bytes): agent.pub, manifest, segments."""
        row = await self._export_allowed(caller, clip_id)
        assert row.agent_public_key is not None
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(row.agent_public_key))
        yield "agent.pub", 0, public.public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        files = [(MANIFEST, row.manifest_sha256 or "")] + [
            (str(s["file"]), str(s["sha256"])) for s in row.segment_list]
        for name, expected in files:
            digest = hashlib.sha256()
            async for offset, data in self._fetch(row, name):
                digest.update(data)
                yield name, offset, data
            if digest.hexdigest() != expected:  # custody broken at the district: say so, stop
                log.error("evidence export differs from the chain", clip=clip_id, file=name)
                raise EvidenceRejected(mqtt_pb2.EVIDENCE_ERROR_INTERNAL, f"{name} at the agent no longer matches the "
                                       "hash on the audit chain; export stopped")

    async def _export_allowed(self, caller: Caller, clip_id: str) -> ClipRow:
        row = self.visible(caller, clip_id)
        operator = caller.operator
        stored = self._access.incidents.get(row.incident_id)
        now = self._clock()
        grant_holds = (stored is not None and operator.agency in stored.incident.agencies
                       and stored.incident.closed_at is None and now < stored.incident.expires_at)
        if not grant_holds or operator.role not in self._access.policy.evidence.roles:
            await self._deny(caller, AuditAction.EVIDENCE_EXPORT,
                             f"exporting clip {clip_id} needs incident {row.incident_id}'s open "
                             "grant for your agency", incident_id=row.incident_id,
                             camera_ids=(row.camera_id,))
        if row.state != "sealed":
            raise InvalidRequest(f"clip {clip_id} is {row.state}; only a sealed clip is exported")
        await self._record(AuditEntry(
            action=AuditAction.EVIDENCE_EXPORT, operator_id=operator.operator_id,
            agency=operator.agency, source_address=caller.source_address or None,
            camera_ids=(row.camera_id,), incident_id=row.incident_id,
            details={"clip_id": clip_id, "manifest_sha256": row.manifest_sha256,
                     "bytes": sum(int(str(s["bytes"])) for s in row.segment_list)}))
        return row

    async def _fetch(self, row: ClipRow, name: str) -> AsyncIterator[tuple[int, bytes]]:
        offset = 0
        while True:
            fetch = mqtt_pb2.EvidenceFetch(clip_id=row.clip_id, file=name, offset=offset,
                                           length=CHUNK_BYTES)
            if offset == 0:
                fetch.grant_id = f"{row.clip_id}:{name}:{uuid.uuid4().hex[:12]}"
                fetch.grant = self._export_grant(row, fetch.grant_id)
            reply = await self._ask(row.district_id, mqtt_pb2.SignalRequest(evidence_fetch=fetch))
            if not reply.data:
                return
            yield offset, reply.data
            offset += len(reply.data)

    def _export_grant(self, row: ClipRow, grant_id: str) -> bytes:
        now = self._clock()
        return self._access.signer.sign(GrantClaimsData(
            session_id=grant_id, camera_id=row.camera_id,
            district_id=row.district_id, operator_id=row.operator_id, agency=row.agency,
            incident_id=row.incident_id, purpose="evidence export", not_before=now,
            expires_at=now + timedelta(minutes=5)))
