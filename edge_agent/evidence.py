"""The agent's evidence desk: answers the core's evidence requests for this district's cameras.

Requests arrive in ``SignalRequest`` (``evidence_start``, ``evidence_stop``, ``evidence_fetch``,
``evidence_hold``) and are answered with an ``EvidenceReply``. Starting a clip needs a grant the
core signed for that clip (the same edge check as a viewer session); so does every export chunk.
The desk keeps a pre-roll for every camera someone watches, seals clips into the store, purges
them when their retention ends, and reports seals and purges on the district's evidence topic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from edge_agent.camera_feed import CameraFeed
from edge_agent.evidence_recorder import ClipRecorder, PreRoll
from edge_agent.evidence_settings import EvidenceSettings
from edge_agent.evidence_store import ClipRecord, EvidenceStore
from edge_agent.exceptions import EvidenceRefused, GrantRejected
from edge_agent.grant_check import GrantVerifier
from protos.safetynet.v1 import mqtt_pb2
from runtime.exceptions import LinkDown
from runtime.signing_keys import load_or_create_signing_key, write_public_key

log = structlog.get_logger(__name__)

Publish = Callable[[bytes], Awaitable[None]]


def _stamp(text: str) -> Timestamp | None:
    if not text:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(text))
    return stamp


def clip_message(store: EvidenceStore, record: ClipRecord) -> mqtt_pb2.EvidenceClip:
    return mqtt_pb2.EvidenceClip(
        clip_id=record.clip_id, camera_id=record.camera_id, state=record.state,
        started_at=_stamp(record.started_at), ended_at=_stamp(record.ended_at),
        expires_at=_stamp(record.expires_at), end_reason=record.end_reason,
        segments=[mqtt_pb2.EvidenceSegment(file=s["file"], sha256=s["sha256"], bytes=s["bytes"])
                  for s in record.segments],
        manifest_sha256=record.manifest_sha256, manifest_bytes=record.manifest_bytes,
        agent_key_id=store.key_id, agent_public_key=store.public_key,
        incident_id=record.incident_id, operator_id=record.operator_id,
        truncated_by_crash=record.truncated_by_crash)


class EvidenceDesk:
    def __init__(self, settings: EvidenceSettings, *, district_id: str, agent_id: str,
                 feeds: dict[str, CameraFeed], grants: GrantVerifier | None,
                 publish: Publish, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        key = load_or_create_signing_key(settings.key_file)
        write_public_key(settings.key_file.with_suffix(".pub"), key)
        self.store = EvidenceStore(settings, district_id=district_id, agent_id=agent_id, key=key)
        # A clip the last run was recording when it died is sealed now; the sweep reports it.
        self.store.recover_after_crash(clock())
        self.settings = settings
        self.recorders: dict[str, ClipRecorder] = {}
        self._feeds = feeds
        self._grants = grants
        self._publish = publish
        self._clock = clock
        self._pre_rolls: dict[str, PreRoll] = {}
        self._sealing: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # the link is (back) up: report what waits, now
        self._district = district_id

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="evidence-sweeper")

    async def close(self) -> None:
        """Seal every running clip, drop pre-rolls, stop the sweeper; idempotent."""
        for recorder in list(self.recorders.values()):
            recorder.stop("agent stopping")
        await asyncio.gather(*self._sealing, return_exceptions=True)
        for pre_roll in self._pre_rolls.values():
            await pre_roll.close()
        self._pre_rolls.clear()
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)

    # --- pre-roll: only for cameras someone watches -----------------------------------------

    def viewers_changed(self, camera_id: str) -> None:
        feed = self._feeds.get(camera_id)
        if feed is None or self.settings.pre_roll_seconds <= 0:
            return
        if feed.viewers > 0 and camera_id not in self._pre_rolls:
            self._pre_rolls[camera_id] = PreRoll(feed, self.settings.pre_roll_seconds)
        elif feed.viewers == 0 and camera_id in self._pre_rolls:
            task = asyncio.create_task(self._pre_rolls.pop(camera_id).close())
            self._sealing.add(task)
            task.add_done_callback(self._sealing.discard)

    # --- requests ---------------------------------------------------------------------------

    async def handle(self, request: mqtt_pb2.SignalRequest) -> mqtt_pb2.EvidenceReply:
        body = request.WhichOneof("body")
        try:
            if body == "evidence_start":
                return mqtt_pb2.EvidenceReply(clip=self._start(request.evidence_start))
            if body == "evidence_stop":
                return mqtt_pb2.EvidenceReply(clip=await self._stop(request.evidence_stop))
            if body == "evidence_fetch":
                return mqtt_pb2.EvidenceReply(data=await self._fetch(request.evidence_fetch))
            hold = request.evidence_hold
            record = self.store.hold(hold.clip_id, hold.hold_until.ToDatetime(tzinfo=UTC))
            return mqtt_pb2.EvidenceReply(clip=clip_message(self.store, record))
        except EvidenceRefused as exc:
            log.info("evidence request refused", request=request.request_id,
                     code=mqtt_pb2.EvidenceError.Name(exc.code), why=exc.message)
            return mqtt_pb2.EvidenceReply(error=mqtt_pb2.EvidenceFailure(
                code=exc.code,
                message=exc.message))

    def _check_grant(self, grant: bytes, camera_id: str, grant_id: str) -> None:
        if self._grants is None:
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_GRANT_REJECTED,
                "this agent has no core public key configured")
        try:
            self._grants.check(grant, camera_id, grant_id)
        except GrantRejected as exc:
            raise EvidenceRefused(mqtt_pb2.EVIDENCE_ERROR_GRANT_REJECTED, exc.reason) from exc

    def _start(self, start: mqtt_pb2.EvidenceStart) -> mqtt_pb2.EvidenceClip:
        feed = self._feeds.get(start.camera_id)
        if feed is None:
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_UNKNOWN_CAMERA,
                f"camera {start.camera_id!r} is not in "
                f"district {self._district!r}")
        limit = self.settings.max_clip_seconds
        if not 0 < start.max_seconds <= limit:
            raise EvidenceRefused(
                mqtt_pb2.EVIDENCE_ERROR_TOO_LONG,
                f"a clip lasts at most {limit:g} s at this agent, "
                f"asked {start.max_seconds:g} s")
        self._check_grant(start.grant, start.camera_id, start.clip_id)
        record = self.store.create(
            clip_id=start.clip_id, camera_id=start.camera_id, incident_id=start.incident_id,
            operator_id=start.operator_id, agency=start.agency,
            retention_days=start.retention_days, now=self._clock())
        pre_roll = self._pre_rolls.get(start.camera_id)
        recorder = ClipRecorder(
            clip_id=record.clip_id, feed=feed, directory=self.store.folder(record.clip_id),
            pre_roll=pre_roll.snapshot() if pre_roll else [], max_seconds=start.max_seconds,
            segment_seconds=self.settings.segment_seconds, room_left=self._room_left)
        self.recorders[record.clip_id] = recorder
        task = asyncio.create_task(self._seal_when_done(record, recorder),
                                   name=f"seal:{record.clip_id}")
        self._sealing.add(task)
        task.add_done_callback(self._sealing.discard)
        log.info("evidence clip started", clip=record.clip_id, camera=record.camera_id,
                 incident=record.incident_id, pre_roll=bool(pre_roll))
        return clip_message(self.store, record)

    def _room_left(self, clip_bytes: int) -> bool:
        return self.store.has_room()

    async def _seal_when_done(self, record: ClipRecord, recorder: ClipRecorder) -> None:
        try:
            reason = await recorder.done
        finally:
            self.recorders.pop(record.clip_id, None)
        await asyncio.to_thread(self.store.seal, record, recorder.segments, reason, self._clock())
        await self.report(record)

    async def _stop(self, stop: mqtt_pb2.EvidenceStop) -> mqtt_pb2.EvidenceClip:
        record = self.store.get(stop.clip_id)
        recorder = self.recorders.get(stop.clip_id)
        if recorder is not None:
            recorder.stop(stop.reason or "stopped by operator")
            task = next((t for t in self._sealing if t.get_name() == f"seal:{stop.clip_id}"), None)
            if task is not None:
                await asyncio.shield(task)
        return clip_message(self.store, record)

    async def _fetch(self, fetch: mqtt_pb2.EvidenceFetch) -> bytes:
        record = self.store.get(fetch.clip_id)
        if fetch.offset == 0:
            # Each file's export starts with a fresh grant the core signed for that file.
            if not fetch.grant_id.startswith(f"{fetch.clip_id}:{fetch.file}:"):
                raise EvidenceRefused(
                    mqtt_pb2.EVIDENCE_ERROR_GRANT_REJECTED,
                    "an export needs a grant signed by the "
                    "core for this clip's file")
            self._check_grant(fetch.grant, record.camera_id, fetch.grant_id)
        return await asyncio.to_thread(self.store.read_chunk, fetch.clip_id, fetch.file,
                                       fetch.offset, fetch.length)

    # --- seal and purge reports -------------------------------------------------------------

    async def report(self, record: ClipRecord) -> None:
        """Send the clip's unreported events; kept for the next sweep when the link is down."""
        for kind in list(record.unreported):
            event = mqtt_pb2.EvidenceEvent(
                kind=mqtt_pb2.EvidenceEvent.KIND_SEALED if kind == "sealed"
                else mqtt_pb2.EvidenceEvent.KIND_PURGED,
                clip=clip_message(self.store, record), reason=record.end_reason)
            event.at.FromDatetime(self._clock())
            try:
                await self._publish(event.SerializeToString())
            except (LinkDown, RuntimeError) as exc:
                log.warning("evidence event kept for later", clip=record.clip_id, kind=kind,
                            error=str(exc))
                return
            record.unreported.remove(kind)
            self.store.save(record)

    async def sweep(self) -> None:
        now = self._clock()
        for record in self.store.due_for_purge(now):
            await asyncio.to_thread(self.store.purge, record, now)
        for record in list(self.store.clips.values()):
            if record.unreported and record.clip_id not in self.recorders:
                await self.report(record)

    def link_up(self) -> None:
        """The broker link is (back) up: seals and purges not yet reported go out at once
        (a clip sealed at start, after a crash, waits for the link)."""
        self._wake.set()

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except OSError:
                log.exception("evidence sweep failed; retried next time")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.purge_interval_seconds):
                    await self._wake.wait()
            self._wake.clear()
