"""A connection lost while ``on_connect`` publishes is a lost link like any other: the link
reconnects and greets again, it never ends (a core whose link ended was deaf for good)."""

from __future__ import annotations

import asyncio

import aiomqtt

from runtime.exceptions import LinkDown
from runtime.mqtt_link import BrokerSettings, MqttLink
from safetynet.broker import MosquittoBroker


async def _ignore(message: aiomqtt.Message) -> None:
    """Nothing is subscribed."""


async def test_a_link_lost_during_on_connect_reconnects_and_greets_again(
        mosquitto: MosquittoBroker) -> None:
    greeted = asyncio.Event()
    calls = 0
    link: MqttLink | None = None

    async def on_connect() -> None:
        nonlocal calls
        calls += 1
        assert link is not None
        if link.connections < 2:  # every greeting on the first connection fails to publish
            if calls == 1:  # the broker restarts under the first one: that connection is gone
                await mosquitto.stop()
                await mosquitto.start()
            raise LinkDown("safetynet/v1/core/status/core-b", "Operation timed out")
        greeted.set()  # greeted on a new connection

    link = MqttLink(BrokerSettings(host=mosquitto.host, port=mosquitto.port, keepalive=5),
                    client_id="greeter", on_message=_ignore, on_connect=on_connect)
    async with link:
        async with asyncio.timeout(10):
            await greeted.wait()
        assert link.connections == 2 and link.connected.is_set() and calls >= 2
