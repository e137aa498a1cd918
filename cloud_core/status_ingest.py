"""Keeps the registry current from what agents publish: agent status, camera status, heartbeats.

Every payload is checked before anything is written: a malformed or inconsistent message (wrong
protobuf, a camera status on another district's topic, impossible coordinates) is logged with
what is wrong and dropped, and the registry keeps what it had.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TypeVar

import structlog
from google.protobuf.message import DecodeError, Message

from cloud_core.registry import CameraUpdate, Registry
from protos import topics
from protos.safetynet.v1 import mqtt_pb2

log = structlog.get_logger(__name__)

#: Why the sessions of an agent that went offline end (registry and audit).
AGENT_OFFLINE = "agent offline"

_M = TypeVar("_M", bound=Message)

_REASON_NAMES = {
    value: name.removeprefix("OFFLINE_REASON_").lower()
    for name, value in mqtt_pb2.OfflineReason.items()
    if value != mqtt_pb2.OFFLINE_REASON_UNSPECIFIED
}


#: The close reason of the sessions an agent held when it went offline.


class MalformedStatus(ValueError):
    pass


class StatusIngest:
    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self.rejected = 0

    def handle(self, topic: topics.ParsedTopic, payload: bytes) -> None:
        """Apply one status message; reject (log and drop) anything malformed."""
        try:
            if topic.kind == topics.Kind.AGENT_STATUS:
                self._agent_status(topic, payload)
            elif topic.kind == topics.Kind.CAMERA_STATUS:
                status = _decode(mqtt_pb2.CameraStatus, payload)
                self._registry.upsert_cameras([self._camera_update(topic.district, status, topic.camera)])
            elif topic.kind == topics.Kind.HEARTBEAT:
                self._heartbeat(topic, payload)
        except MalformedStatus as exc:
            self.rejected += 1
            log.warning("rejected status message", topic_kind=topic.kind, district=topic.district,
                        problem=str(exc), size=len(payload))

    def _agent_status(self, topic: topics.ParsedTopic, payload: bytes) -> None:
        status = _decode(mqtt_pb2.AgentStatus, payload)
        if status.district_id != topic.district:
            raise MalformedStatus(
                f"agent status names district {status.district_id!r} on {topic.district!r}'s topic")
        if status.state not in (mqtt_pb2.AGENT_STATE_ONLINE, mqtt_pb2.AGENT_STATE_OFFLINE):
            raise MalformedStatus(f"agent status has no valid state ({status.state})")
        online = status.state == mqtt_pb2.AGENT_STATE_ONLINE
        now = datetime.now(UTC)
        self._registry.set_agent(topic.district, status.district_name, status.agent_id, online,
                                 status.software_version, now)
        log.info("agent status", district=topic.district, online=online, agent=status.agent_id)
        # An agent gone offline (its last will) serves nothing: the core then ends its
        # sessions in the registry, audited (AccessService.agent_status_changed).

    def _heartbeat(self, topic: topics.ParsedTopic, payload: bytes) -> None:
        beat = _decode(mqtt_pb2.Heartbeat, payload)
        if beat.district_id != topic.district:
            raise MalformedStatus(
                f"heartbeat names district {beat.district_id!r} on {topic.district!r}'s topic")
        updates = [self._camera_update(topic.district, status, None) for status in beat.cameras]
        self._registry.upsert_cameras(updates)
        self._registry.touch_cameras(topic.district, datetime.now(UTC))

    def _camera_update(self, district: str, status: mqtt_pb2.CameraStatus,
                       topic_camera: str | None) -> CameraUpdate:
        camera = status.camera
        if not camera.camera_id:
            raise MalformedStatus("camera status has no camera id")
        if topic_camera is not None and camera.camera_id != topic_camera:
            raise MalformedStatus(
                f"camera status for {camera.camera_id!r} on {topic_camera!r}'s topic")
        if camera.district_id != district:
            raise MalformedStatus(
                f"camera {camera.camera_id!r} claims district {camera.district_id!r} on {district!r}'s topic")
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
        return CameraUpdate(
            camera_id=camera.camera_id, district_id=district, name=camera.name or camera.camera_id,
            lat=camera.lat, lon=camera.lon, kind=camera.kind, status=state,
            reason=_REASON_NAMES.get(status.reason, ""), detail=status.detail[:500],
            viewers=max(0, status.viewers), seen_at=datetime.now(UTC),
        )


def _decode(message_type: type[_M], payload: bytes) -> _M:
    try:
        return message_type.FromString(payload)
    except DecodeError as exc:
        raise MalformedStatus(f"not a valid {message_type.__name__} protobuf: {exc}") from exc
