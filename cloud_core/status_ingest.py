"""Keeps the registry current from what agents publish: agent status, camera changes, heartbeats.

The MQTT reader only *stages* a message (``submit``: O(1), thread-safe, never waits on storage;
the core calls it as each MQTT message is read); one writer thread
decodes, checks and writes what is staged, one transaction per slice of at most
``slice_rows`` cameras, so a 2,720-camera heartbeat or a 68,000-status reconnect burst costs the
loop nothing but the staging.

Staging keeps the newest payload per topic (statuses are state, and MQTT retains only the newest
per topic too), in arrival order of that newest one, so memory is bounded by the number of topics
(cameras and districts), not by the number of messages, and the loop never has to wait. A
district's ``camera_changes`` message is the exception: each names different cameras, so each is
staged on its own (one entry, however many cameras it carries); so is an agent status, which the
registry orders by the connection it belongs to. Beyond ``max_pending`` staged
entries a message is dropped: logged at WARNING and counted.

Statuses are state, and a district may send the same camera's state twice by different paths
(its retained snapshot, the heartbeat, and the camera's own change message): the newest
``changed_at`` wins, whatever the arrival order, so a core reading retained messages after a
restart never lets an older camera status undo its district's newer snapshot.

Every payload is checked before anything is written: a malformed or inconsistent message (wrong
protobuf, a camera status on another district's topic, impossible coordinates, a heartbeat with
more cameras than a district can have) is logged with what is wrong and dropped, and the registry
keeps what it had (a heartbeat is all-or-nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self, TypeVar

import structlog
from google.protobuf.message import DecodeError, Message

from cloud_core.exceptions import RegistryError
from cloud_core.metrics import CoreMetrics
from cloud_core.registry import AgentUpdate, CameraUpdate, Registry, StatusBatch
from protos import topics
from protos.safetynet.v1 import mqtt_pb2

log = structlog.get_logger(__name__)

#: Why the sessions of an agent that went offline end (registry and audit).
AGENT_OFFLINE = "agent offline"

_M = TypeVar("_M", bound=Message)
_Batch = TypeVar("_Batch", mqtt_pb2.Heartbeat, mqtt_pb2.CameraChanges)

_REASON_NAMES = {
    value: name.removeprefix("OFFLINE_REASON_").lower()
    for name, value in mqtt_pb2.OfflineReason.items()
    if value != mqtt_pb2.OFFLINE_REASON_UNSPECIFIED
}

MAX_HEARTBEAT_CAMERAS = 10_000   # the largest district has about 6,000
MAX_CAMERA_STATUS_BYTES = 4_096  # one status is ~100 bytes
MAX_PENDING = 250_000            # distinct topics staged and not yet written (68,000 cameras + 25)
SLICE_ROWS = 2_000               # cameras per transaction: a slice holds the write lock ~20 ms
#: A ``changed_at`` further ahead of the core's clock than this orders nothing (a wrong clock
#: must not freeze a camera's state until it comes true); the status is applied as it arrives.
CLOCK_SKEW = timedelta(minutes=5)

INGESTED_KINDS = frozenset({"agent_status", "camera_status", "camera_changes", "heartbeat"})
#: Staged ``camera_changes`` keys: the topic, this separator, a running number.
_NTH = "\x00"
CommitHandler = Callable[[int], Awaitable[None]]


class MalformedStatus(ValueError):
    pass


#: A camera, (district, camera id), and its status as sent (serialized).
_Sent = tuple[tuple[str, str], bytes]


@dataclass
class _Slice:
    agents: list[AgentUpdate] = field(default_factory=list)
    cameras: list[CameraUpdate] = field(default_factory=list)
    heartbeats: list[str] = field(default_factory=list)
    alive: list[tuple[str, datetime]] = field(default_factory=list)
    #: What each written camera's status was, as sent: kept once the slice is committed.
    sent: list[_Sent] = field(default_factory=list)

    def batch(self, seen_at: datetime) -> StatusBatch:
        return StatusBatch(self.agents, self.cameras, self.heartbeats, seen_at, self.alive)


class StatusIngest:
    """Stages status messages on the loop and writes them from one thread; an async context manager.

    ``on_commit(version)`` runs on the loop after every written batch (the console's change feed
    and ``CoreServer.wait_until`` hang on it).
    """

    def __init__(self, registry: Registry, *, metrics: CoreMetrics | None = None,
                 on_commit: CommitHandler | None = None,
                 max_heartbeat_cameras: int = MAX_HEARTBEAT_CAMERAS,
                 max_pending: int = MAX_PENDING, slice_rows: int = SLICE_ROWS) -> None:
        self._registry = registry
        self._metrics = metrics or CoreMetrics()
        self._on_commit = on_commit
        self._max_heartbeat_cameras = max_heartbeat_cameras
        self._max_pending = max_pending
        self._slice_rows = slice_rows
        # topic name -> payload: str and bytes only, which the garbage collector does not track,
        # so 68,000 staged statuses add nothing to a full collection's pause.
        self._pending: dict[str, bytes] = {}
        self._lock = threading.Lock()    # submit() may be called from any thread
        self._waking = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._submitted = 0
        self._committed = 0
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._executor: ThreadPoolExecutor | None = None
        self._writer_db: Registry | None = None
        self._task: asyncio.Task[None] | None = None
        # (district, camera) -> the newest changed_at written, and the status as last written
        # (serialized): the writer thread's alone. A district's snapshot repeats 2,720 cameras
        # of which a few changed; the rest are skipped without decoding or writing.
        self._newest: dict[tuple[str, str], datetime] = {}
        self._written: dict[tuple[str, str], bytes] = {}
        self.unchanged = 0
        self.rejected = 0
        self.dropped = 0
        self.ingested = 0
        self.superseded = 0  # camera statuses older than one already written, skipped

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="registry-writer")
        self._writer_db = self._registry.writer()
        self._task = asyncio.create_task(self._run(), name="status-ingest-writer")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        with contextlib.suppress(TimeoutError):  # what is still staged is logged by close()
            await self.drained(timeout=5.0)
        await self.close()

    async def close(self) -> None:
        """Stop writing (what is staged and not written is logged), release the thread; idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True)
        with self._lock:
            pending, self._pending = self._pending, {}
            self._loop = None
        if pending:
            log.warning("status ingest closed with statuses not written", pending=len(pending))
        writer, self._writer_db = self._writer_db, None
        if writer is not None:
            writer.close()

    async def broker_reachability(self, reachable: bool) -> None:
        """Record whether the core reaches its broker (on the writer thread, as every write),
        then tell the consoles: every camera shows ``unknown`` while it does not."""
        loop = asyncio.get_running_loop()
        # This process's knowledge, read by everything that shows a camera (consoles, gRPC):
        # the registry the loop reads holds it, not only the writer's connection.
        self._registry.broker_reachable = reachable
        if self._executor is None or self._writer_db is None:
            return
        try:
            version = await loop.run_in_executor(self._executor,
                                                 self._writer_db.set_broker_reachable, reachable)
        except RegistryError as exc:
            log.error("broker reachability not written", error=str(exc))
            return
        if self._on_commit is not None:
            await self._on_commit(version)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def received(self) -> int:
        """Status messages staged so far (a newer one for the same topic replaces one staged)."""
        return self._submitted

    def submit(self, topic: topics.ParsedTopic, topic_name: str, payload: bytes) -> bool:
        """Stage one status message for the writer (any thread, O(1)); False when dropped."""
        with self._lock:
            key = topic_name
            # Each its own slot: a change message names its own cameras, and an agent status
            # is ordered by its connection in SQL (a late will of an old connection must not
            # replace the new connection's online before the writer sees both).
            if topic.kind in ("camera_changes", "agent_status"):
                key = f"{topic_name}{_NTH}{self._submitted}"
            full = key not in self._pending and len(self._pending) >= self._max_pending
            if full:
                self.dropped += 1
            else:
                self._pending.pop(key, None)
                self._pending[key] = payload
                self._submitted += 1
            wake = not full and not self._waking
            self._waking = self._waking or wake
            loop = self._loop
        if full:
            self._metrics.messages_dropped.labels(reason="ingest_backlog").inc()
            log.warning("status dropped: ingest backlog full", topic=topic_name,
                        pending=self._max_pending, dropped=self.dropped)
            return False
        if wake and loop is not None:
            loop.call_soon_threadsafe(self._wake.set)  # once per batch, not per message
        return True

    async def drained(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is written (or rejected)."""
        target = self._submitted
        async with asyncio.timeout(timeout), self._progress:
            await self._progress.wait_for(lambda: self._committed >= target)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._executor is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                staged, self._pending = self._pending, {}
                generation = self._submitted
                self._waking = False
            version: int | None = None
            try:
                version = await loop.run_in_executor(self._executor, self._write,
                                                     list(staged.items()))
            except Exception:
                # The writer must keep going: this batch is lost, logged and counted.
                self.dropped += len(staged)
                self._metrics.messages_dropped.labels(reason="writer_failed").inc(len(staged))
                log.exception("status writer failed", statuses=len(staged))
            self._committed = generation
            async with self._progress:
                self._progress.notify_all()
            if self._on_commit is not None and version is not None:
                await self._on_commit(version)

    # --- the writer thread ------------------------------------------------------------------

    def _write(self, staged: list[tuple[str, bytes]]) -> int | None:
        """Decode, check and write ``staged`` in slices; return the registry version after."""
        assert self._writer_db is not None
        seen_at = datetime.now(UTC)
        version: int | None = None
        current = _Slice()
        for key, payload in staged:
            topic = topics.parse(key.partition(_NTH)[0])  # parsed once already, by submit()
            try:
                self._decode_into(current, topic, payload, seen_at)
            except MalformedStatus as exc:
                self._reject(topic, payload, exc)
            if len(current.cameras) >= self._slice_rows:
                version = self._commit(current, seen_at) or version
                current = _Slice()
        if current.agents or current.cameras or current.heartbeats:
            version = self._commit(current, seen_at) or version
        return version

    def _commit(self, part: _Slice, seen_at: datetime) -> int | None:
        assert self._writer_db is not None
        with self._metrics.ingest_batch_seconds.time():
            try:
                version = self._writer_db.apply(part.batch(seen_at))
            except RegistryError as exc:
                lost = len(part.cameras) + len(part.agents)
                self.dropped += lost
                self._metrics.messages_dropped.labels(reason="registry_error").inc(lost)
                log.error("status batch not written", error=str(exc), statuses=lost)
                return None
        self.ingested += len(part.cameras)
        self._metrics.statuses_ingested.inc(len(part.cameras))
        self._written.update(part.sent)
        return version

    def _reject(self, topic: topics.ParsedTopic, payload: bytes, exc: MalformedStatus) -> None:
        self.rejected += 1
        self._metrics.statuses_rejected.labels(kind=topic.kind).inc()
        log.warning("rejected status message", topic_kind=topic.kind, district=topic.district,
                    problem=str(exc), size=len(payload))

    def _decode_into(self, part: _Slice, topic: topics.ParsedTopic, payload: bytes,
                     seen_at: datetime) -> None:
        if topic.kind == "agent_status":
            part.agents.append(_agent_status(topic, payload, seen_at))
        elif topic.kind == "camera_status":
            if len(payload) > MAX_CAMERA_STATUS_BYTES:
                raise MalformedStatus(f"camera status of {len(payload)} bytes is larger than "
                                      f"{MAX_CAMERA_STATUS_BYTES}")
            status = _decode(mqtt_pb2.CameraStatus, payload)
            key = (topic.district, status.camera.camera_id)
            if self._written.get(key) == payload:
                self.unchanged += 1
                return
            self._add_newer(part, [(camera_update(topic.district, status, topic.camera, seen_at),
                                    (key, payload))])
        elif topic.kind == "heartbeat":
            beat = self._decode_batch(mqtt_pb2.Heartbeat, topic, payload)
            self._add_newer(part, self._changed(topic, beat.cameras, seen_at))
            part.heartbeats.append(topic.district)
            if (connected_at := _connected_at(beat, seen_at)) is not None:
                part.alive.append((topic.district, connected_at))
        elif topic.kind == "camera_changes":
            changes = self._decode_batch(mqtt_pb2.CameraChanges, topic, payload)
            self._add_newer(part, self._changed(topic, changes.cameras, seen_at))

    def _add_newer(self, part: _Slice, changed: list[tuple[CameraUpdate, _Sent]]) -> None:
        """Add to ``part`` what is not older than a state already written for the same camera."""
        newest = self._newest
        for update, sent in changed:
            if update.changed_at is not None:
                key = (update.district_id, update.camera_id)
                prior = newest.get(key)
                if prior is not None and update.changed_at < prior:
                    self.superseded += 1
                    continue
                newest[key] = update.changed_at
            part.cameras.append(update)
            part.sent.append(sent)

    def _decode_batch(self, message_type: type[_Batch], topic: topics.ParsedTopic,
                      payload: bytes) -> _Batch:
        """A heartbeat (snapshot) or camera changes of ``topic``'s district, checked whole."""
        what = "heartbeat" if message_type is mqtt_pb2.Heartbeat else "camera changes"
        limit = self._max_heartbeat_cameras
        if len(payload) > limit * MAX_CAMERA_STATUS_BYTES:
            raise MalformedStatus(f"{what} of {len(payload)} bytes cannot be {limit} cameras")
        batch = _decode(message_type, payload)
        if batch.district_id != topic.district:
            raise MalformedStatus(
                f"{what} names district {batch.district_id!r} on {topic.district!r}'s topic")
        if len(batch.cameras) > limit:
            raise MalformedStatus(f"{what} carries {len(batch.cameras)} cameras, more than the "
                                  f"{limit} a district may have")
        if len({status.camera.camera_id for status in batch.cameras}) != len(batch.cameras):
            raise MalformedStatus(f"{what} lists a camera more than once")
        return batch

    def _changed(self, topic: topics.ParsedTopic, statuses: Iterable[mqtt_pb2.CameraStatus],
                 seen_at: datetime) -> list[tuple[CameraUpdate, _Sent]]:
        """The cameras of ``statuses`` that differ from what was written, checked; all or none."""
        changed: list[tuple[CameraUpdate, _Sent]] = []
        written = self._written
        unchanged = 0
        for status in statuses:
            key = (topic.district, status.camera.camera_id)
            raw = status.SerializeToString()
            if written.get(key) == raw:
                unchanged += 1
                continue  # written before, checked then: nothing to do
            changed.append((camera_update(topic.district, status, None, seen_at), (key, raw)))
        self.unchanged += unchanged
        return changed


def _agent_status(topic: topics.ParsedTopic, payload: bytes, seen_at: datetime) -> AgentUpdate:
    status = _decode(mqtt_pb2.AgentStatus, payload)
    if status.district_id != topic.district:
        raise MalformedStatus(
            f"agent status names district {status.district_id!r} on {topic.district!r}'s topic")
    if status.state not in (mqtt_pb2.AGENT_STATE_ONLINE, mqtt_pb2.AGENT_STATE_OFFLINE):
        raise MalformedStatus(f"agent status has no valid state ({status.state})")
    online = status.state == mqtt_pb2.AGENT_STATE_ONLINE
    connected_at = _connected_at(status, seen_at)
    log.info("agent status", district=topic.district, online=online, agent=status.agent_id,
             connected_at=None if connected_at is None else connected_at.isoformat())
    return AgentUpdate(topic.district, status.district_name, status.agent_id, online,
                       status.software_version, seen_at, connected_at)


def _connected_at(status: mqtt_pb2.AgentStatus | mqtt_pb2.Heartbeat,
                  seen_at: datetime) -> datetime | None:
    """The connection an agent status (or heartbeat) belongs to, or None: not sent (an older
    agent), not a time, or further ahead than ``CLOCK_SKEW`` (a wrong clock must not freeze the
    district until it comes true); then the status orders nothing and is applied as it
    arrives."""
    if not status.HasField("connected_at"):
        return None
    try:
        connected_at = status.connected_at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    return None if connected_at > seen_at + CLOCK_SKEW else connected_at


def camera_update(district: str, status: mqtt_pb2.CameraStatus, topic_camera: str | None,
                  seen_at: datetime) -> CameraUpdate:
    """A checked camera status of ``district`` (``topic_camera``: the camera its topic names)."""
    camera = status.camera
    if not camera.camera_id:
        raise MalformedStatus("camera status has no camera id")
    if topic_camera is not None and camera.camera_id != topic_camera:
        raise MalformedStatus(
            f"camera status for {camera.camera_id!r} on {topic_camera!r}'s topic")
    if camera.district_id != district:
        raise MalformedStatus(
            f"camera {camera.camera_id!r} claims district {camera.district_id!r} on {district!r}'s topic")
    if not topics.ID_PATTERN.fullmatch(camera.camera_id):
        try:
            topics.check_id(camera.camera_id, "camera id")
        except ValueError as exc:
            raise MalformedStatus(str(exc)) from exc
    if not (math.isfinite(camera.lat) and math.isfinite(camera.lon)
            and abs(camera.lat) <= 90 and abs(camera.lon) <= 180):
        raise MalformedStatus(f"camera {camera.camera_id!r} has impossible coordinates "
                              f"({camera.lat}, {camera.lon})")
    if status.state == mqtt_pb2.CAMERA_STATE_ONLINE:
        state = "online"
    elif status.state == mqtt_pb2.CAMERA_STATE_OFFLINE:
        state = "offline"
    else:
        raise MalformedStatus(f"camera {camera.camera_id!r} status has no valid state")
    changed_at: datetime | None = None
    if status.HasField("changed_at"):
        try:
            changed_at = status.changed_at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            changed_at = None  # outside what a timestamp can be: orders nothing
        if changed_at is not None and changed_at > seen_at + CLOCK_SKEW:
            changed_at = None
    return CameraUpdate(
        camera_id=camera.camera_id, district_id=district, name=camera.name or camera.camera_id,
        lat=camera.lat, lon=camera.lon, kind=camera.kind, status=state,
        reason=_REASON_NAMES.get(status.reason, ""), detail=status.detail[:500],
        viewers=max(0, status.viewers), seen_at=seen_at, changed_at=changed_at,
    )


def _decode(message_type: type[_M], payload: bytes) -> _M:
    try:
        return message_type.FromString(payload)
    except DecodeError as exc:
        raise MalformedStatus(f"not a valid {message_type.__name__} protobuf: {exc}") from exc
