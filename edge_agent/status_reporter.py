"""Tells the city what this district's agent and cameras are doing, over MQTT.

A camera's status is published when it changes (not retained), together with the other cameras
that changed within ``CHANGE_WINDOW`` of it: one ``CameraChanges`` message per window, so a
district-wide outage of 2,720 cameras costs the broker and the core three messages, not 2,720.
The heartbeat is the district's
snapshot: every camera's status in one retained message, sent at once after every (re)connect
(the broker may have restarted and lost what it held), within ``SNAPSHOT_DELAY`` of any change,
and periodically. A core that (re)subscribes reads each district's snapshot, so the city's
68,000 statuses reach it as 25 messages, not 68,000 (docs/mqtt.md). The agent's own status is retained too, with the broker
holding ``offline`` as the connection's last will. Will and ``online`` of one connection carry
the same ``connected_at``, stamped as the link starts the attempt, so the core can tell a late
will of an older connection (a cluster node's, a taken-over session's) from the current one's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from edge_agent.camera_feed import FeedHealth, FeedState
from edge_agent.config import AgentConfig, CameraConfig
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from protos.topics import Kind
from runtime import __version__
from runtime.exceptions import LinkDown
from runtime.mqtt_link import LastWill, MqttLink

log = structlog.get_logger(__name__)

_REASONS = {
    "refused": mqtt_pb2.OFFLINE_REASON_REFUSED,
    "unauthorized": mqtt_pb2.OFFLINE_REASON_UNAUTHORIZED,
    "timeout": mqtt_pb2.OFFLINE_REASON_TIMEOUT,
    "stalled": mqtt_pb2.OFFLINE_REASON_STALLED,
    "stopped": mqtt_pb2.OFFLINE_REASON_STALLED,
    "codec": mqtt_pb2.OFFLINE_REASON_CODEC,
}


#: After a camera changes, the retained snapshot follows within this many seconds (changes in
#: between go in the same one): a core that restarts finds no snapshot staler than this.
SNAPSHOT_DELAY = 5.0
#: A camera's change waits this long for others to go in the same message.
CHANGE_WINDOW = 0.05
#: Cameras per ``CameraChanges`` message (~100 bytes each); more go in the next one at once.
MAX_CHANGES_PER_MESSAGE = 1_000


def now_timestamp() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


class StatusReporter:
    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._link: MqttLink | None = None
        self._cameras: dict[str, mqtt_pb2.CameraStatus] = {
            camera.camera_id: self._initial_status(camera) for camera in config.cameras
        }
        for extra in config.status_only:  # simulation: in the snapshot, never pulled
            self._cameras[extra.camera_id] = mqtt_pb2.CameraStatus(
                camera=mqtt_pb2.CameraDescriptor(
                    camera_id=extra.camera_id, district_id=config.district_id, name=extra.name,
                    lat=extra.lat, lon=extra.lon, kind="status-only"),
                state=mqtt_pb2.CAMERA_STATE_ONLINE, changed_at=now_timestamp())
        self._started = time.monotonic()
        self.sessions = 0
        self.journal_seq: Callable[[], int] = lambda: 0  # the local journal's head, if any
        self._changed = asyncio.Event()  # a camera changed since the last snapshot
        self._unsent: dict[str, mqtt_pb2.CameraStatus] = {}  # changed, not yet published
        self._unsent_changed = asyncio.Event()
        self._connected_us = 0  # the current connection's stamp (microseconds), 0 before any
        self._connected_at: Timestamp | None = None

    def attach(self, link: MqttLink) -> None:
        self._link = link

    def last_will(self) -> LastWill:
        """The will of a new connection: ``offline``, stamped with a new ``connected_at``.

        The link's will factory: called as each connection attempt starts, so what
        ``publish_online`` says on that connection carries the same stamp. Stamps only grow
        within this process, even if the wall clock steps back.
        """
        self._connected_us = max(time.time_ns() // 1_000, self._connected_us + 1)
        self._connected_at = Timestamp()
        self._connected_at.FromMicroseconds(self._connected_us)
        return LastWill(topics.route(Kind.AGENT_STATUS, self._config.district_id),
                        self.agent_status(mqtt_pb2.AGENT_STATE_OFFLINE).SerializeToString())

    @property
    def connected_at(self) -> Timestamp | None:
        """The stamp of the latest connection attempt (its will's), None before the first."""
        return self._connected_at

    def agent_status(self, state: int) -> mqtt_pb2.AgentStatus:
        """The agent's status, of the current connection (``connected_at``) when there is one."""
        return mqtt_pb2.AgentStatus(
            district_id=self._config.district_id, district_name=self._config.district_name,
            agent_id=self._config.agent_id, state=state,  # type: ignore[arg-type]
            software_version=__version__, changed_at=now_timestamp(),
            camera_count=len(self._cameras),
            uplink_streams=self._config.uplink_streams,
            connected_at=self._connected_at,
        )

    def _initial_status(self, camera: CameraConfig) -> mqtt_pb2.CameraStatus:
        return mqtt_pb2.CameraStatus(
            camera=mqtt_pb2.CameraDescriptor(
                camera_id=camera.camera_id, district_id=self._config.district_id,
                name=camera.name, lat=camera.lat, lon=camera.lon, kind=camera.kind,
            ),
            # Not yet probed: assumed to work until a pull says otherwise.
            state=mqtt_pb2.CAMERA_STATE_ONLINE, changed_at=now_timestamp(),
        )

    def camera_status(self, camera_id: str) -> mqtt_pb2.CameraStatus:
        return self._cameras[camera_id]

    def camera_states(self) -> list[str]:
        """Every camera's last published state: ``online`` or ``offline``."""
        online = mqtt_pb2.CAMERA_STATE_ONLINE
        return ["online" if s.state == online else "offline" for s in self._cameras.values()]

    async def publish_online(self) -> None:
        """After each (re)connect: the agent is online (with the stamp this connection's will
        got), and its snapshot of every camera."""
        await self._publish(topics.route(Kind.AGENT_STATUS, self._config.district_id),
                            self.agent_status(mqtt_pb2.AGENT_STATE_ONLINE))
        await self.publish_heartbeat()

    async def publish_offline(self) -> bool:
        """On a clean stop: say ``offline`` ourselves (the last will only fires on a lost link);
        False when the link was down."""
        return await self._publish(topics.route(Kind.AGENT_STATUS, self._config.district_id),
                                   self.agent_status(mqtt_pb2.AGENT_STATE_OFFLINE))

    async def camera_changed(self, camera_id: str, health: FeedHealth, viewers: int,
                             streaming: bool, *, codec: str | None = None,
                             transcoding: bool = False) -> None:
        """A pulled camera's state: online while packets arrive, offline with a reason.

        An idle camera (nobody watches, nothing pulled) keeps the state it was last seen in,
        until a probe says otherwise (``camera_probed``).
        """
        status = self._cameras[camera_id]
        new = mqtt_pb2.CameraStatus()
        new.CopyFrom(status)
        if health.state is FeedState.FAILED:
            new.state = mqtt_pb2.CAMERA_STATE_OFFLINE
            new.reason = _REASONS.get(health.reason, mqtt_pb2.OFFLINE_REASON_UNSPECIFIED)
            new.detail = health.detail
        elif health.state is FeedState.LIVE:
            new.state = mqtt_pb2.CAMERA_STATE_ONLINE
            new.reason = mqtt_pb2.OFFLINE_REASON_UNSPECIFIED
            new.detail = ""
        new.viewers = viewers
        new.streaming = streaming
        if codec is not None:
            new.codec = codec
        new.transcoding = transcoding and streaming
        await self._replace_camera(status, new)

    async def camera_probed(self, camera_id: str, ok: bool, reason: str = "", detail: str = "",
                            codec: str = "") -> None:
        """An idle camera answered a probe (online) or did not (offline with the reason)."""
        status = self._cameras[camera_id]
        new = mqtt_pb2.CameraStatus()
        new.CopyFrom(status)
        new.state = mqtt_pb2.CAMERA_STATE_ONLINE if ok else mqtt_pb2.CAMERA_STATE_OFFLINE
        new.reason = (mqtt_pb2.OFFLINE_REASON_UNSPECIFIED if ok
                      else _REASONS.get(reason, mqtt_pb2.OFFLINE_REASON_UNSPECIFIED))
        new.detail = "" if ok else detail
        if codec:
            new.codec = codec
        await self._replace_camera(status, new)

    async def _replace_camera(self, status: mqtt_pb2.CameraStatus,
                              new: mqtt_pb2.CameraStatus) -> None:
        """Publish ``new`` if it differs from ``status`` in anything but its timestamp."""
        new.changed_at.CopyFrom(status.changed_at)
        if new == status:
            return
        new.changed_at.CopyFrom(now_timestamp())
        self._cameras[status.camera.camera_id] = new
        self._changed.set()
        self._unsent[status.camera.camera_id] = new
        self._unsent_changed.set()

    async def run_changes(self, window: float = CHANGE_WINDOW) -> None:
        """Publish the cameras that changed, ``window`` after the first of them changed."""
        while True:
            await self._unsent_changed.wait()
            await asyncio.sleep(window)  # what changes meanwhile goes along
            self._unsent_changed.clear()
            await self.publish_changes()

    async def publish_changes(self) -> None:
        """Every change not yet published (each camera's newest), in as few messages as fit."""
        unsent, self._unsent = list(self._unsent.values()), {}
        for start in range(0, len(unsent), MAX_CHANGES_PER_MESSAGE):
            changes = mqtt_pb2.CameraChanges(
                district_id=self._config.district_id, sent_at=now_timestamp(),
                cameras=unsent[start:start + MAX_CHANGES_PER_MESSAGE])
            await self._publish(topics.route(Kind.CAMERA_CHANGES, self._config.district_id),
                                changes)

    async def publish_heartbeat(self) -> None:
        await self._publish(topics.route(Kind.HEARTBEAT, self._config.district_id),
                            self.heartbeat())

    def heartbeat(self) -> mqtt_pb2.Heartbeat:
        """The district's snapshot, of the current connection (``connected_at``)."""
        return mqtt_pb2.Heartbeat(
            district_id=self._config.district_id, agent_id=self._config.agent_id,
            sent_at=now_timestamp(), uptime_seconds=time.monotonic() - self._started,
            cameras=list(self._cameras.values()), sessions=self.sessions,
            journal_seq=self.journal_seq(), connected_at=self._connected_at,
        )

    async def run_heartbeats(self, snapshot_delay: float = SNAPSHOT_DELAY) -> None:
        """The snapshot every ``heartbeat_seconds``, and ``snapshot_delay`` after a change."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._config.heartbeat_seconds):
                    await self._changed.wait()
                    await asyncio.sleep(snapshot_delay)  # what changes meanwhile goes along
            self._changed.clear()
            await self.publish_heartbeat()

    async def _publish(self, route: topics.Route, message: Message) -> bool:
        """Publish on the link; False (and nothing raised) while it is down."""
        if self._link is None:
            return False
        try:
            await self._link.send(route, message.SerializeToString())
        except LinkDown as exc:
            # The current state is published again in full after the next reconnect.
            log.debug("status not published, link down", topic=route.topic, why=exc.why)
            return False
        return True
