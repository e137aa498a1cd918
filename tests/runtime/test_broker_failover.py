"""MqttLink with a list of broker addresses: dead or silent nodes first, then a live one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from runtime.mqtt_link import BrokerAddress, BrokerSettings, MqttLink, parse_hosts
from safetynet.broker import MosquittoBroker, free_port


async def _ignore(message: aiomqtt.Message) -> None:
    return None


@pytest.fixture
async def silent_node() -> AsyncIterator[BrokerAddress]:
    """Accepts TCP and never answers: a wedged broker, the worst case for a connect."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield BrokerAddress("127.0.0.1", port)
    for writer in writers:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_dead_and_silent_addresses_first_fail_over_within_the_connect_timeout(
        mosquitto: MosquittoBroker, silent_node: BrokerAddress) -> None:
    dead = BrokerAddress("127.0.0.1", free_port())
    live = BrokerAddress(mosquitto.host, mosquitto.port)
    settings = BrokerSettings(hosts=(dead, silent_node, live), connect_timeout=1.0, keepalive=5)
    started = time.monotonic()
    async with MqttLink(settings, client_id="failover", on_message=_ignore) as link:
        await link.wait_connected(5)
        elapsed = time.monotonic() - started
        assert link.broker == live
    assert elapsed < 2.5  # refused at once, one timeout for the silent node


async def test_every_address_dead_keeps_retrying_and_closes_promptly() -> None:
    settings = BrokerSettings(hosts=(BrokerAddress("127.0.0.1", free_port()),
                                     BrokerAddress("127.0.0.1", free_port())),
                              connect_timeout=0.5)
    link = MqttLink(settings, client_id="nobody", on_message=_ignore, backoff_max=0.5)
    async with link:
        with pytest.raises(TimeoutError):
            await link.wait_connected(1.0)
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert link.broker is None


def test_hosts_parse_and_bad_entries_name_themselves() -> None:
    assert parse_hosts(["a:1884", "b", "[::1]:1885"], default_port=1883) == (
        BrokerAddress("a", 1884), BrokerAddress("b", 1883), BrokerAddress("::1", 1885))
    for bad, words in ((["a:99999"], "'a:99999' has no valid port"), ("a:1", "must be a list"),
                       (["a:1", "a:1"], "twice"), ([""], "is not a host")):
        with pytest.raises(ValueError, match=words):
            parse_hosts(bad, default_port=1883)


def test_single_address_still_works_and_toml_hosts_are_read(tmp_path) -> None:
    single = BrokerSettings.from_mapping({"host": "mqtt.example", "port": 8883}, tmp_path)
    assert single.addresses == (BrokerAddress("mqtt.example", 8883),)
    cluster = BrokerSettings.from_mapping(
        {"hosts": ["n1:8883", "n2:8883", "n3"], "port": 8883, "connect_timeout": 2}, tmp_path)
    assert [str(a) for a in cluster.addresses] == ["n1:8883", "n2:8883", "n3:8883"]
    assert cluster.describe() == "mqtt://n1:8883,n2:8883,n3:8883"
    with pytest.raises(ValueError, match="connect_timeout"):
        BrokerSettings.from_mapping({"connect_timeout": 0}, tmp_path)
