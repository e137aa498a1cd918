"""While its main link is down or unsettled, the agent's heartbeat also goes out on the standby,
naming the main link's newest connection attempt; once the main link is settled, it does not.

The two links are stand-ins with an uptime that keep what is published (a unit test of the
agent's rule); the links against a NATS cluster with a node killed are
tests/integration/test_core_failover.py."""

from __future__ import annotations

from edge_agent.agent import EdgeAgent
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.exceptions import LinkDown
from runtime.mqtt_link import BrokerSettings, MqttLink
from runtime.standby_link import SETTLE_S
from tests.conftest import AgentConfigFactory


class StandIn(MqttLink):
    """Up for ``up`` seconds (None: down); keeps what it was asked to publish."""

    def __init__(self, up: float | None) -> None:
        super().__init__(BrokerSettings(), client_id="stand-in", on_message=_ignore)
        self.up = up
        if up is not None:
            self.connected.set()
        self.published: list[tuple[str, bytes, int, bool]] = []

    def up_for(self) -> float:
        return self.up or 0.0

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        if self.up is None:
            raise LinkDown(topic, "down")
        self.published.append((topic, payload, qos, retain))


async def _ignore(message: object) -> None:
    return None


async def test_the_heartbeat_goes_on_the_standby_only_while_the_main_link_is_unsettled(
        agent_config: AgentConfigFactory) -> None:
    agent = EdgeAgent(agent_config(cameras=1, grant_public_key=None))
    agent.status.last_will()  # the main link starts a new connection attempt: a new stamp
    stamp = agent.status.connected_at
    assert stamp is not None
    standby = StandIn(up=600)

    assert await agent._standby_beat(StandIn(up=None), standby)  # main link down
    assert await agent._standby_beat(StandIn(up=0.5), standby)  # just (re)connected
    for topic, payload, qos, retain in standby.published:
        beat = mqtt_pb2.Heartbeat.FromString(payload)
        assert (topic, qos, retain) == (topics.heartbeat("gangnam"), 0, True)
        assert beat.connected_at == stamp
        assert [c.camera.camera_id for c in beat.cameras] == ["gangnam-001"]

    assert not await agent._standby_beat(StandIn(up=SETTLE_S + 1), standby)  # settled
    assert not await agent._standby_beat(StandIn(up=None), StandIn(up=None))  # both down
    assert len(standby.published) == 2
