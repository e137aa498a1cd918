"""The agent's camera changes reach the broker as few ``CameraChanges`` messages, each camera's
newest once (real Mosquitto, a real MQTT link for agent and listener)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiomqtt

from edge_agent.config import AgentConfig, StatusOnlyCamera
from edge_agent.status_reporter import MAX_CHANGES_PER_MESSAGE, StatusReporter
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.mqtt_link import BrokerSettings, MqttLink
from simulators.city import district_cameras, districts
from tests.conftest import AgentConfigFactory


async def ignore(message: aiomqtt.Message) -> None:
    """The reporter's link subscribes to nothing."""


class ChangesHeard:
    """Every ``CameraChanges`` the district's reporter publishes, as a listener hears them."""

    def __init__(self) -> None:
        self.received: list[mqtt_pb2.CameraChanges] = []
        self.changed = asyncio.Condition()

    async def on_message(self, message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        async with self.changed:
            self.received.append(mqtt_pb2.CameraChanges.FromString(message.payload))
            self.changed.notify_all()

    async def wait(self, cameras: int) -> None:
        """Until messages carrying ``cameras`` statuses in all have arrived."""
        async with asyncio.timeout(5), self.changed:
            await self.changed.wait_for(
                lambda: sum(len(m.cameras) for m in self.received) >= cameras)


@contextlib.asynccontextmanager
async def reporting(config: AgentConfig, broker_settings: BrokerSettings
                    ) -> AsyncIterator[tuple[StatusReporter, ChangesHeard]]:
    """A reporter on a link of its own and a listener to its district's changes, connected."""
    heard = ChangesHeard()
    listener = MqttLink(broker_settings, client_id="changes-listener",
                        on_message=heard.on_message,
                        subscriptions=[topics.camera_changes(config.district_id)])
    link = MqttLink(broker_settings, client_id="reporter", on_message=ignore)
    reporter = StatusReporter(config)
    reporter.attach(link)
    async with listener, link:
        await listener.wait_connected(5)
        await link.wait_connected(5)
        yield reporter, heard


async def test_changes_within_a_window_go_in_one_message(
        agent_config: AgentConfigFactory, broker_settings: BrokerSettings) -> None:
    config = agent_config(cameras=3)
    async with reporting(config, broker_settings) as (reporter, heard):
        runner = asyncio.create_task(reporter.run_changes(window=0.2))
        try:
            first, second = (camera.camera_id for camera in config.cameras[:2])
            await reporter.camera_probed(first, False, "timeout", "no answer")
            await reporter.camera_probed(second, False, "refused", "port closed")
            await reporter.camera_probed(first, True)  # its newest is what goes
            await reporter.camera_probed(first, True)  # no change: nothing more
            await heard.wait(1)
            [message] = heard.received
            assert message.district_id == config.district_id
            assert {s.camera.camera_id: s.state for s in message.cameras} == {
                first: mqtt_pb2.CAMERA_STATE_ONLINE, second: mqtt_pb2.CAMERA_STATE_OFFLINE}
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def test_a_district_wide_outage_is_a_few_bounded_messages(
        agent_config: AgentConfigFactory, broker_settings: BrokerSettings) -> None:
    gangnam = next(d for d in districts() if d.district_id == "gangnam")
    extra = tuple(StatusOnlyCamera(c.camera_id, c.name, c.lat, c.lon)
                  for c in district_cameras(gangnam)[:2_500])
    config = agent_config(cameras=0, status_only=extra)
    async with reporting(config, broker_settings) as (reporter, heard):
        for camera in extra:
            await reporter.camera_probed(camera.camera_id, False, "timeout", "no answer")
        await reporter.publish_changes()
        await heard.wait(len(extra))
    assert [len(m.cameras) for m in heard.received] == [MAX_CHANGES_PER_MESSAGE] * 2 + [500]
    assert len({s.camera.camera_id for m in heard.received for s in m.cameras}) == 2_500


def test_the_will_and_the_online_of_one_connection_carry_its_stamp(
        agent_config: AgentConfigFactory) -> None:
    reporter = StatusReporter(agent_config(cameras=1))
    assert not reporter.agent_status(mqtt_pb2.AGENT_STATE_ONLINE).HasField("connected_at")
    first = mqtt_pb2.AgentStatus.FromString(reporter.last_will().payload)
    assert first.state == mqtt_pb2.AGENT_STATE_OFFLINE and first.HasField("connected_at")
    assert reporter.agent_status(mqtt_pb2.AGENT_STATE_ONLINE).connected_at == first.connected_at
    second = mqtt_pb2.AgentStatus.FromString(reporter.last_will().payload)  # the next attempt
    assert second.connected_at.ToMicroseconds() > first.connected_at.ToMicroseconds()
    assert reporter.agent_status(mqtt_pb2.AGENT_STATE_ONLINE).connected_at == second.connected_at
