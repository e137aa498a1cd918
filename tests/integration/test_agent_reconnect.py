"""An agent's link reconnects (the broker restarted) and a late last will of its old connection
arrives after its new online, retained, as a cluster node or a session takeover may deliver it:
the core keeps the district online. A real Mosquitto, a real core and agent in this process."""

from __future__ import annotations

import aiomqtt

from cloud_core.registry import Registry
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from safetynet.broker import MosquittoBroker
from tests.conftest import MAPO, AgentConfigFactory


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
