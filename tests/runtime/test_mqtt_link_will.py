"""MqttLink with a will factory: every connection attempt gets a will of its own, and the broker
holds the will of the attempt that connected (real Mosquitto; a session takeover makes it
publish the will, as it does for a lost connection)."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt

from protos import topics
from protos.topics import Kind
from runtime.mqtt_link import BrokerAddress, BrokerSettings, LastWill, MqttLink
from safetynet.broker import MosquittoBroker, free_port

CLIENT_ID = "will-per-attempt"


async def _take_over(mosquitto: MosquittoBroker, wills: asyncio.Queue[bytes]) -> bytes:
    """Connect with the link's client id: the broker drops the link's connection and publishes
    its will; return that will."""
    taker = aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=CLIENT_ID)
    await taker.__aenter__()
    try:
        async with asyncio.timeout(10):
            return await wills.get()
    finally:
        with contextlib.suppress(aiomqtt.MqttError):  # the link may have taken over back
            await taker.__aexit__(None, None, None)


async def test_the_link_builds_a_fresh_will_for_every_connection_attempt(
        mosquitto: MosquittoBroker) -> None:
    route = topics.route(Kind.AGENT_STATUS, "gangnam")
    built: list[bytes] = []

    def will() -> LastWill:
        built.append(f"will-{len(built) + 1}".encode())
        return LastWill(route, built[-1])

    wills: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_will(message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        if not message.retain:  # a retained one is an earlier will, replayed on subscribe
            wills.put_nowait(message.payload)

    connected = asyncio.Event()
    attempts_when_connected: list[int] = []

    async def on_connect() -> None:
        attempts_when_connected.append(len(built))
        connected.set()

    live = BrokerAddress(mosquitto.host, mosquitto.port)
    settings = BrokerSettings(hosts=(BrokerAddress("127.0.0.1", free_port()), live),
                              connect_timeout=2.0, keepalive=5)
    watcher = MqttLink(BrokerSettings(host=mosquitto.host, port=mosquitto.port),
                       client_id="will-watcher", subscriptions=[route.topic], on_message=on_will)
    link = MqttLink(settings, client_id=CLIENT_ID, on_message=on_will, on_connect=on_connect,
                    will=will, backoff_initial=0.05, backoff_max=0.2)
    async with watcher, link:
        await watcher.wait_connected(5)
        async with asyncio.timeout(10):
            await connected.wait()
        # The dead node's attempt built a will too; the broker holds the live attempt's.
        assert attempts_when_connected == [2]
        connected.clear()
        assert await _take_over(mosquitto, wills) == b"will-2"

        async with asyncio.timeout(10):
            await connected.wait()
        latest = attempts_when_connected[-1]
        assert latest > 2
        assert await _take_over(mosquitto, wills) == built[latest - 1]


async def test_a_static_will_is_the_same_for_every_connection(mosquitto: MosquittoBroker) -> None:
    route = topics.route(Kind.AGENT_STATUS, "gangnam")
    wills: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_will(message: aiomqtt.Message) -> None:
        assert isinstance(message.payload, bytes)
        if not message.retain:
            wills.put_nowait(message.payload)

    watcher = MqttLink(BrokerSettings(host=mosquitto.host, port=mosquitto.port),
                       client_id="will-watcher", subscriptions=[route.topic], on_message=on_will)
    link = MqttLink(BrokerSettings(host=mosquitto.host, port=mosquitto.port, keepalive=5),
                    client_id=CLIENT_ID, on_message=on_will, will=LastWill(route, b"static"),
                    backoff_initial=0.05, backoff_max=0.2)
    async with watcher, link:
        await watcher.wait_connected(5)
        await link.wait_connected(5)
        assert await _take_over(mosquitto, wills) == b"static"
