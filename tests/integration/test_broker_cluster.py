"""The core and agents over a 3-node NATS cluster (MQTT on JetStream): a node dies, they fail
over, retained state survives, a killed agent's will fires, districts stay apart."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiomqtt
import pytest

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from provisioning.nats_cluster import agent_user, core_user
from runtime.mqtt_link import BrokerAddress, BrokerSettings, MqttLink
from safetynet.broker import free_port
from safetynet.nats_broker import NatsCluster
from simulators.agent_configs import agent_config_text
from tests.conftest import GANGNAM, MAPO, SMALL_SIM, AgentConfigFactory

#: Brings cores, brokers and (failover) PostgreSQL of its own: not about the core's storage engine.
pytestmark = pytest.mark.one_backend

PASSWORDS = {"safetynet-core": "core-secret", "agent:gangnam": "gangnam-secret",
             "agent:mapo": "mapo-secret"}


@pytest.fixture
async def cluster() -> AsyncIterator[NatsCluster]:
    users = (core_user("safetynet-core", PASSWORDS["safetynet-core"]),
             agent_user("agent:gangnam", "gangnam", PASSWORDS["agent:gangnam"]),
             agent_user("agent:mapo", "mapo", PASSWORDS["agent:mapo"]))
    async with NatsCluster(users) as running:
        yield running


def _settings(user: str, addresses: tuple[BrokerAddress, ...]) -> BrokerSettings:
    # QoS 0 subscriptions: no JetStream consumer to wait for after a node loss (docs/scale-out.md)
    return BrokerSettings(hosts=addresses, username=user, password=PASSWORDS[user], keepalive=5,
                          connect_timeout=5.0, max_subscribe_qos=0)


def _district_online(district: str, cameras: int):
    def check(registry) -> bool:
        return len(registry.list_cameras(district_id=district, status="online")) == cameras
    return check


async def test_agent_and_core_fail_over_when_their_node_is_killed(
        cluster: NatsCluster, core_config: CoreConfig, agent_config: AgentConfigFactory,
        tmp_path: Path) -> None:
    dead = BrokerAddress("127.0.0.1", free_port())
    core_settings = _settings("safetynet-core", (dead, *cluster.addresses))
    async with CoreServer(replace(core_config, broker=core_settings)) as core:
        await core.wait_connected(10)
        config = agent_config(GANGNAM, cameras=3,
                              broker=_settings("agent:gangnam", cluster.addresses))
        async with EdgeAgent(config) as agent:
            await core.wait_until(_district_online("gangnam", 3), 10)
            node = cluster.index_of(agent.link.broker)
            assert node == cluster.index_of(core.link.broker) == 0  # both on the first node
            killed_at = time.monotonic()
            await cluster.kill(node)
            await agent.link.wait_connected(20)
            await core.link.wait_connected(20)
            assert agent.link.connections >= 2 and core.link.connections >= 2
            assert cluster.index_of(agent.link.broker) not in (-1, node)
            # The agent republishes after its reconnect; the core sees all of it again.
            await core.wait_until(lambda r: r.district("gangnam").agent_online, 10)
            await core.wait_until(_district_online("gangnam", 3), 10)
            print("converged after", time.monotonic() - killed_at)
            assert time.monotonic() - killed_at < 20
    # Retained state outlived the node: a core that starts now, with an empty registry, on a
    # surviving node, learns every camera from the retained statuses alone.
    fresh = replace(core_config, database=tmp_path / "fresh.sqlite3",
                    broker=_settings("safetynet-core", cluster.addresses[1:]))
    async with CoreServer(fresh) as second:
        await second.wait_until(lambda r: r.district("gangnam") is not None
                                and len(r.list_cameras(district_id="gangnam")) == 3, 10)


async def test_killed_agent_goes_offline_through_its_last_will(
        cluster: NatsCluster, core_config: CoreConfig, tmp_path: Path) -> None:
    hosts = ", ".join(f'"{a}"' for a in cluster.addresses)
    text = agent_config_text(GANGNAM, broker_host="127.0.0.1", broker_port=1, source=SMALL_SIM,
                             grant_public_key=core_config.grant_public_key_path)
    text = text.replace("[broker]\n", f'[broker]\nhosts = [{hosts}]\nusername = "agent:gangnam"\n'
                        f'password = "{PASSWORDS["agent:gangnam"]}"\nkeepalive = 5\n', 1)
    (tmp_path / "gangnam.toml").write_text(text)
    core_settings = _settings("safetynet-core", cluster.addresses[::-1])
    async with CoreServer(replace(core_config, broker=core_settings)) as core:
        agent = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "safetynet", "agent", "--config", str(tmp_path / "gangnam.toml"),
            "--log-level", "warning", stdin=asyncio.subprocess.DEVNULL)
        try:
            await core.wait_until(_district_online("gangnam", 20), 20)
            agent.send_signal(signal.SIGKILL)
            await agent.wait()
            await core.wait_until(lambda r: not r.district("gangnam").agent_online, 10)
        finally:
            if agent.returncode is None:
                agent.kill()
                await agent.wait()
        assert core.registry.list_cameras(district_id="gangnam", status="online") == []


async def _ignore(message: aiomqtt.Message) -> None:
    return None


async def test_a_district_cannot_publish_or_read_another_districts_topics(
        cluster: NatsCluster, core_config: CoreConfig, agent_config: AgentConfigFactory) -> None:
    core_settings = _settings("safetynet-core", cluster.addresses)
    async with CoreServer(replace(core_config, broker=core_settings)) as core:
        config = agent_config(GANGNAM, cameras=1, broker=_settings("agent:gangnam", cluster.addresses))
        async with EdgeAgent(config):
            await core.wait_until(_district_online("gangnam", 1), 10)
            received: list[str] = []

            async def collect(message: aiomqtt.Message) -> None:
                received.append(str(message.topic))

            mapo = MqttLink(_settings("agent:mapo", cluster.addresses[1:]), client_id="mapo-agent",
                            on_message=collect, subscriptions=[topics.signal_request("mapo")])
            async with mapo:
                await mapo.wait_connected(5)
                forged = mqtt_pb2.AgentStatus(district_id="gangnam", agent_id="forger",
                                              state=mqtt_pb2.AGENT_STATE_OFFLINE)
                await mapo.publish(topics.agent_status("gangnam"), forged.SerializeToString(),
                                   retain=True)
                await mapo.publish(topics.agent_status("mapo"), mqtt_pb2.AgentStatus(
                    district_id="mapo", agent_id="mapo-agent",
                    state=mqtt_pb2.AGENT_STATE_ONLINE).SerializeToString(), retain=True)
                # Its own district's status arrives (so the forged one, sent first, had its
                # chance), and the forgery did not: gangnam is still online.
                await core.wait_until(lambda r: r.district("mapo") is not None
                                      and r.district("mapo").agent_online, 10)
                assert core.registry.district("gangnam").agent_online
            # Only mapo's own signalling reaches it (the core may ask the newly online mapo
            # for its local journal): nothing of gangnam's.
            assert all(topic == topics.signal_request("mapo") for topic in received), received
            # Reading another district's signalling: the SUBACK refuses it (0x80).
            node = cluster.addresses[1]
            async with aiomqtt.Client(node.host, node.port, username="agent:mapo",
                                      password=PASSWORDS["agent:mapo"], identifier="mapo-snoop",
                                      timeout=5) as snoop:
                granted = await snoop.subscribe(topics.signal_request("gangnam"), qos=0)
                assert [code.is_failure for code in granted] == [True]
                # Nor the server's own delivery subjects.
                internal = await snoop.subscribe("$MQTT/sub/#", qos=0)
                assert [code.is_failure for code in internal] == [True]
        # And nothing forged was retained either: gangnam's last word is its own clean stop.
    retained: list[bytes] = []
    probe_addr = cluster.addresses[2]
    async with aiomqtt.Client(probe_addr.host, probe_addr.port, username="safetynet-core",
                              password=PASSWORDS["safetynet-core"], identifier="probe",
                              timeout=5) as probe:
        await probe.subscribe(topics.agent_status("gangnam"), qos=1)
        async with asyncio.timeout(5):
            async for message in probe.messages:
                retained.append(bytes(message.payload))
                break
    status = mqtt_pb2.AgentStatus.FromString(retained[0])
    assert status.agent_id == "gangnam-agent"


async def test_wrong_password_is_refused_with_a_clear_error(cluster: NatsCluster) -> None:
    address = cluster.addresses[0]
    with pytest.raises(aiomqtt.MqttError, match=r"[Nn]ot authori[sz]ed|[Bb]ad user name or password"):
        async with aiomqtt.Client(address.host, address.port, username="agent:gangnam",
                                  password="wrong", identifier="intruder", timeout=5):
            pass


__all__ = ["MAPO"]
