"""MqttLink reads a retained backlog larger than its queue without losing a message.

The broker sends every retained message a subscription matches right behind the SUBACK. The
city core's backlog is 68,000 statuses, far more than aiomqtt's bounded incoming queue: a link
that waited for its subscriptions and for ``on_connect``'s publish acknowledgement (which the
broker sends only after the whole backlog) before reading dropped all but the first queue-full.
"""

from __future__ import annotations

import asyncio

import aiomqtt

from protos.topics import Kind, Route
from runtime.mqtt_link import BrokerSettings, MqttLink
from safetynet.broker import MosquittoBroker

BACKLOG = 3_000
QUEUE = 100  # far below the backlog, as 10,000 is below the city's 68,000


async def _retain_backlog(settings: BrokerSettings) -> None:
    async with aiomqtt.Client(settings.host, settings.port, identifier="filler") as client:
        for k in range(BACKLOG):
            await client.publish(f"backlog/d{k % 25}/c{k}/status", str(k).encode(), qos=1, retain=True)


async def test_a_retained_backlog_larger_than_the_queue_arrives_whole_behind_a_slow_on_connect(
        mosquitto: MosquittoBroker, broker_settings: BrokerSettings) -> None:
    await _retain_backlog(broker_settings)
    seen: set[str] = set()
    every = asyncio.Event()
    link: MqttLink | None = None

    async def on_message(message: aiomqtt.Message) -> None:
        seen.add(str(message.topic))
        if len(seen) == BACKLOG:
            every.set()

    async def on_connect() -> None:
        # Waits for a PUBACK, which the broker queues behind the whole retained backlog.
        assert link is not None
        await link.publish("backlog/core/online", b"1", qos=1)

    routes = [Route(Kind.CAMERA_STATUS, "backlog/+/+/status", 0, False)]
    link = MqttLink(broker_settings, client_id="backlog-reader", subscriptions=routes,
                    on_message=on_message, on_connect=on_connect, max_queued_messages=QUEUE)
    async with link:
        await asyncio.wait_for(every.wait(), 30)
    assert len(seen) == BACKLOG


async def test_one_subscribe_for_all_routes_each_gets_its_retained_messages(
        mosquitto: MosquittoBroker, broker_settings: BrokerSettings) -> None:
    async with aiomqtt.Client(broker_settings.host, broker_settings.port) as client:
        await client.publish("a/x", b"a", qos=1, retain=True)
        await client.publish("b/y", b"b", qos=1, retain=True)
    got: dict[str, bytes] = {}
    both = asyncio.Event()

    async def on_message(message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        got[str(message.topic)] = message.payload
        if len(got) == 2:
            both.set()

    async with MqttLink(broker_settings, client_id="two-routes", subscriptions=["a/+", "b/+"],
                        on_message=on_message):
        await asyncio.wait_for(both.wait(), 10)
    assert got == {"a/x": b"a", "b/y": b"b"}
