"""An agent's link reconnects (the broker restarted) and a late last will of its old connection
arrives after its new online, retained, as a cluster node or a session takeover may deliver it:
the core keeps the district online. A real Mosquitto, a real core and agent in this process."""

from __future__ import annotations

import time
from dataclasses import replace

import aiomqtt

from cloud_core.config import CoreConfig
from cloud_core.registry import Registry
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from safetynet.broker import MosquittoBroker
from simulators.pilot_districts import PilotCamera
from tests.conftest import GANGNAM, MAPO, AgentConfigFactory


def _connection(registry: Registry, district_id: str = "gangnam") -> int | None:
    """The connection of the district's agent that the registry last applied (microseconds)."""
    row = registry.db.execute("SELECT connected_at_us FROM districts WHERE district_id = ?",
                              [district_id]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _online(registry: Registry, district_id: str = "gangnam") -> bool:
    district = registry.district(district_id)
    return district is not None and district.agent_online


def _sentinel() -> bytes:
    """A snapshot of another district: published after the stale will by the same client, so
    once its camera is in the registry the will before it has been ingested too."""
    camera = MAPO.cameras[0]
    return mqtt_pb2.Heartbeat(district_id=MAPO.district_id, cameras=[mqtt_pb2.CameraStatus(
        state=mqtt_pb2.CAMERA_STATE_ONLINE, camera=mqtt_pb2.CameraDescriptor(
            camera_id=camera.camera_id, district_id=MAPO.district_id, name=camera.name,
            lat=camera.lat, lon=camera.lon))]).SerializeToString()


async def test_a_late_will_of_the_old_connection_leaves_the_reconnected_agent_online(
        core: CoreServer, mosquitto: MosquittoBroker, agent_config: AgentConfigFactory) -> None:
    config = agent_config(cameras=1)
    registry = core.registry
    assert registry is not None
    async with EdgeAgent(config) as agent:
        await core.wait_until(lambda r: _online(r) and _connection(r) is not None, 20)
        old = mqtt_pb2.AgentStatus(connected_at=agent.status.connected_at).connected_at
        assert _connection(registry) == old.ToMicroseconds()

        # The link dies with its broker and reconnects: a new connection, a new stamp.
        await mosquitto.stop()
        await mosquitto.start()
        await core.wait_until(
            lambda r: _online(r) and (_connection(r) or 0) > old.ToMicroseconds(), 30)

        stale = mqtt_pb2.AgentStatus(
            district_id=config.district_id, district_name=config.district_name,
            agent_id=config.agent_id, state=mqtt_pb2.AGENT_STATE_OFFLINE, connected_at=old)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="late-will") as late:
            await late.publish(topics.agent_status(config.district_id), stale.SerializeToString(),
                               qos=1, retain=True)
            await late.publish(topics.heartbeat(MAPO.district_id), _sentinel(), qos=1)
        await core.wait_until(lambda r: r.camera(MAPO.cameras[0].camera_id) is not None, 10)

        assert _online(registry)
        assert [c.effective_status for c in registry.list_cameras(
            district_id=config.district_id)] == ["online"]
    # A clean stop says offline on the current connection: that still takes the district off.
    await core.wait_until(lambda r: not _online(r), 10)


async def test_an_agent_not_heard_from_is_taken_for_offline_and_its_next_connection_is_online(
        core_config: CoreConfig, mosquitto: MosquittoBroker) -> None:
    """A cluster keeps a will on the node the agent is connected to: when agent and node die
    together, no one says offline. The core takes an agent it has not heard from for
    ``agent_silence_seconds`` for offline; the agent's next connection is online again."""
    camera = GANGNAM.cameras[0]

    def status(state: int, connected_us: int) -> bytes:
        message = mqtt_pb2.AgentStatus(district_id="gangnam", district_name="Gangnam-gu",
                                       agent_id="gangnam-agent", state=state)  # type: ignore[arg-type]
        message.connected_at.FromMicroseconds(connected_us)
        return message.SerializeToString()

    first = int(time.time() * 1_000_000)
    config = replace(core_config, agent_silence_seconds=1.0, sweep_seconds=0.2)
    async with CoreServer(config) as server:
        # Online and one heartbeat, then the connection ends without a word (a clean DISCONNECT
        # sends no will: as good as a will lost with its node).
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="gangnam-agent") as gone:
            await gone.publish(topics.agent_status("gangnam"),
                               status(mqtt_pb2.AGENT_STATE_ONLINE, first), qos=1, retain=True)
            await gone.publish(topics.heartbeat("gangnam"), _snapshot(camera), qos=1)
        await server.wait_until(lambda r: _online(r) and r.camera(camera.camera_id) is not None,
                                10)
        await server.wait_until(lambda r: not _online(r), 10)
        assert [c.effective_status for c in server.registry.list_cameras(
            district_id="gangnam")] == ["offline"]

        # The retained online of that same connection does not revive it; a newer one does.
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="gangnam-agent") as back:
            await back.publish(topics.agent_status("gangnam"),
                               status(mqtt_pb2.AGENT_STATE_ONLINE, first), qos=1, retain=True)
            await back.publish(topics.heartbeat(MAPO.district_id), _sentinel(), qos=1)
            await server.wait_until(lambda r: r.camera(MAPO.cameras[0].camera_id) is not None, 10)
            assert not _online(server.registry)  # type: ignore[arg-type]
            await back.publish(topics.agent_status("gangnam"),
                               status(mqtt_pb2.AGENT_STATE_ONLINE, first + 1_000_000), qos=1,
                               retain=True)
            await back.publish(topics.heartbeat("gangnam"), _snapshot(camera), qos=1)
            await server.wait_until(_online, 10)


def _snapshot(camera: PilotCamera) -> bytes:
    return mqtt_pb2.Heartbeat(district_id="gangnam", cameras=[mqtt_pb2.CameraStatus(
        state=mqtt_pb2.CAMERA_STATE_ONLINE, camera=mqtt_pb2.CameraDescriptor(
            camera_id=camera.camera_id, district_id="gangnam", name=camera.name,
            lat=camera.lat, lon=camera.lon))]).SerializeToString()


async def test_a_core_that_finds_a_stale_will_retained_learns_the_agent_is_online_from_its_heartbeat(
        core_config: CoreConfig, mosquitto: MosquittoBroker) -> None:
    """The broker keeps the agent status that came last: a late will of an older connection
    may sit there although the agent is online on a newer one. A core starting with an empty
    registry takes the agent for online by the heartbeat, which names its connection; a
    heartbeat of the very connection that said offline does not revive it."""
    camera = GANGNAM.cameras[0]
    older = int(time.time() * 1_000_000)
    newer = older + 1_000_000

    def beat(connected_us: int) -> bytes:
        message = mqtt_pb2.Heartbeat.FromString(_snapshot(camera))
        message.connected_at.FromMicroseconds(connected_us)
        return message.SerializeToString()

    will = mqtt_pb2.AgentStatus(district_id="gangnam", district_name="Gangnam-gu",
                                agent_id="gangnam-agent", state=mqtt_pb2.AGENT_STATE_OFFLINE)
    will.connected_at.FromMicroseconds(older)
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="agent-past") as past:
        await past.publish(topics.heartbeat("gangnam"), beat(newer), qos=1, retain=True)
        await past.publish(topics.agent_status("gangnam"), will.SerializeToString(), qos=1,
                           retain=True)
    async with CoreServer(core_config) as server:
        await server.wait_until(_online, 10)
        assert (_connection(server.registry) or 0) == newer  # type: ignore[arg-type]

        # Its own connection's offline (a clean stop) wins over that connection's heartbeat.
        will.connected_at.FromMicroseconds(newer)
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="agent-now") as now:
            await now.publish(topics.agent_status("gangnam"), will.SerializeToString(), qos=1,
                              retain=True)
            await server.wait_until(lambda r: not _online(r), 10)
            await now.publish(topics.heartbeat("gangnam"), beat(newer), qos=1, retain=True)
            await now.publish(topics.heartbeat(MAPO.district_id), _sentinel(), qos=1)
            await server.wait_until(lambda r: r.camera(MAPO.cameras[0].camera_id) is not None,
                                    10)
        assert not _online(server.registry)  # type: ignore[arg-type]
