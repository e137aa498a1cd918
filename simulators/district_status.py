"""Status-only districts: many simulated district agents in one process, statuses and no media.

At city scale a demo on two cores cannot run 25 real agents with 68,000 cameras. What the core
and the consoles see of a district is its MQTT status: the agent's retained ``online`` (with a
last will ``offline``), its retained snapshot (the heartbeat) and every change. This
simulator publishes exactly that for any number of districts from one process, one MQTT
connection per district (each needs its own last will), so the registry, the map and incident
search run at full city scale while only a few real agents serve real video.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import aiomqtt
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime import __version__
from runtime.exceptions import LinkDown
from runtime.mqtt_link import BrokerSettings, LastWill, MqttLink
from simulators.city import CityCamera

log = structlog.get_logger(__name__)

PUBLISH_BATCH = 200  # statuses in flight at once after a (re)connect


@dataclass(frozen=True)
class SimulatedDistrict:
    district_id: str
    name: str
    cameras: tuple[CityCamera, ...]
    # False when a real agent runs for the district too (a few real cameras): it owns the
    # district's agent status and last will, this simulator only adds the other cameras.
    publish_agent: bool = True


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC))
    return stamp


class _District:
    def __init__(self, district: SimulatedDistrict, broker: BrokerSettings) -> None:
        self.district = district
        self.agent_id = f"{district.district_id}-sim"
        self.statuses = {
            c.camera_id: mqtt_pb2.CameraStatus(
                camera=mqtt_pb2.CameraDescriptor(camera_id=c.camera_id, district_id=c.district_id,
                                                 name=c.name, lat=c.lat, lon=c.lon, kind="simulated"),
                state=mqtt_pb2.CAMERA_STATE_ONLINE, changed_at=_now())
            for c in district.cameras
        }
        self.link = MqttLink(broker, client_id=self.agent_id, on_message=self._ignore,
                             on_connect=self.publish_all,
                             will=LastWill(topics.route(topics.Kind.AGENT_STATUS, district.district_id),
                                           self._agent(mqtt_pb2.AGENT_STATE_OFFLINE))
                             if district.publish_agent else None)
        self.started = asyncio.get_running_loop().time()

    async def _ignore(self, message: aiomqtt.Message) -> None:
        return None

    def _agent(self, state: int) -> bytes:
        return mqtt_pb2.AgentStatus(
            district_id=self.district.district_id, district_name=self.district.name,
            agent_id=self.agent_id, state=state,  # type: ignore[arg-type]
            software_version=__version__, changed_at=_now(),
            camera_count=len(self.statuses)).SerializeToString()

    async def publish_all(self) -> None:
        """After each (re)connect, as an agent does: online, then the district's snapshot.

        A district that shares its topics with a real agent (``publish_agent`` False) has no
        snapshot of its own (the heartbeat is the agent's): its cameras go one by one, retained.
        """
        district_id = self.district.district_id
        statuses = list(self.statuses.values())
        if self.district.publish_agent:
            await self.link.publish(topics.agent_status(district_id),
                                    self._agent(mqtt_pb2.AGENT_STATE_ONLINE), retain=True)
            await self.heartbeat()
            log.info("district snapshot published", district=district_id, cameras=len(statuses))
            return
        for start in range(0, len(statuses), PUBLISH_BATCH):
            await asyncio.gather(*(self._publish_camera(s) for s in statuses[start:start + PUBLISH_BATCH]))
        log.info("district statuses published", district=district_id, cameras=len(statuses))

    async def _publish_camera(self, status: mqtt_pb2.CameraStatus) -> None:
        # Sharing a district with a real agent, whose snapshot does not know these cameras, the
        # simulator keeps each one's status retained so a restarted core still finds it.
        await self.link.publish(topics.camera_status(self.district.district_id, status.camera.camera_id),
                                status.SerializeToString(), retain=not self.district.publish_agent)

    async def set_state(self, camera_id: str, online: bool) -> None:
        status = self.statuses[camera_id]
        status.state = mqtt_pb2.CAMERA_STATE_ONLINE if online else mqtt_pb2.CAMERA_STATE_OFFLINE
        status.reason = (mqtt_pb2.OFFLINE_REASON_UNSPECIFIED if online
                         else mqtt_pb2.OFFLINE_REASON_TIMEOUT)
        status.changed_at.CopyFrom(_now())
        if self.district.publish_agent:  # as an agent says it: a change, then the snapshot
            changes = mqtt_pb2.CameraChanges(district_id=self.district.district_id,
                                             cameras=[status], sent_at=_now())
            await self.link.publish(topics.camera_changes(self.district.district_id),
                                    changes.SerializeToString())
        else:
            await self._publish_camera(status)
        await self.heartbeat()  # the retained snapshot follows the change

    async def heartbeat(self) -> None:
        if not self.district.publish_agent:
            return  # the district's real agent sends its heartbeats
        beat = mqtt_pb2.Heartbeat(
            district_id=self.district.district_id, agent_id=self.agent_id, sent_at=_now(),
            uptime_seconds=asyncio.get_running_loop().time() - self.started,
            cameras=list(self.statuses.values()), sessions=0)
        await self.link.send(topics.route(topics.Kind.HEARTBEAT, self.district.district_id),
                             beat.SerializeToString())


class StatusOnlyDistricts:
    """Simulated districts' agents, status only; an async context manager."""

    def __init__(self, broker: BrokerSettings, districts: Sequence[SimulatedDistrict], *,
                 heartbeat_seconds: float = 30.0) -> None:
        self._broker = broker
        self._specs = tuple(districts)
        self._heartbeat_seconds = heartbeat_seconds
        self._districts: dict[str, _District] = {}
        self._owner: dict[str, _District] = {}
        self._heartbeats: asyncio.Task[None] | None = None

    @property
    def camera_count(self) -> int:
        return len(self._owner)

    async def __aenter__(self) -> Self:
        for spec in self._specs:
            district = _District(spec, self._broker)
            self._districts[spec.district_id] = district
            self._owner.update(dict.fromkeys(district.statuses, district))
            await district.link.__aenter__()
        self._heartbeats = asyncio.create_task(self._beat(), name="sim-heartbeats")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def wait_connected(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            for district in self._districts.values():
                await district.link.connected.wait()

    async def set_state(self, camera_id: str, online: bool) -> None:
        """A camera goes offline (or back online): its retained status changes."""
        await self._owner[camera_id].set_state(camera_id, online)

    async def close(self) -> None:
        """Stop heartbeats, disconnect every district (each one's last will says offline)."""
        heartbeats, self._heartbeats = self._heartbeats, None
        if heartbeats is not None:
            heartbeats.cancel()
            await asyncio.gather(heartbeats, return_exceptions=True)
        districts, self._districts = list(self._districts.values()), {}
        for district in districts:
            await district.link.close()

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_seconds)
            for district in list(self._districts.values()):
                try:
                    await district.heartbeat()
                except LinkDown as exc:
                    log.debug("heartbeat not sent, link down", district=district.district.district_id,
                              why=exc.why)
