"""A channel to several core replicas: calls spread over all of them, and a replica that goes
away costs a caller nothing but a retry (real gRPC servers on loopback)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from runtime.core_channel import core_target, open_core_channel, split_addresses


class CountingHealth(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    def __init__(self, name: str, calls: Counter[str]) -> None:
        self._name = name
        self._calls = calls

    async def Check(self, request: health_pb2.HealthCheckRequest,
                    context: grpc.aio.ServicerContext[Any, Any]) -> health_pb2.HealthCheckResponse:
        self._calls[self._name] += 1
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


@contextlib.asynccontextmanager
async def replica(name: str, calls: Counter[str]) -> AsyncIterator[tuple[grpc.aio.Server, int]]:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(CountingHealth(name, calls), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield server, port
    finally:
        await server.stop(grace=None)


async def test_calls_spread_over_replicas_and_survive_one_going_away() -> None:
    calls: Counter[str] = Counter()
    async with replica("a", calls) as (a, port_a), replica("b", calls) as (_, port_b):
        async with open_core_channel(f"127.0.0.1:{port_a},127.0.0.1:{port_b}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            await channel.channel_ready()
            for _ in range(20):
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert calls["a"] >= 5 and calls["b"] >= 5, calls  # round robin, not pick-first
            await a.stop(grace=None)
            before = calls["b"]
            for _ in range(20):  # every call answered: refused on a, retried on b
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert response.status == health_pb2.HealthCheckResponse.SERVING
            assert calls["b"] == before + 20


def test_one_address_is_used_as_given_and_a_list_becomes_one_target() -> None:
    assert core_target("core.city.example:50051").target == "core.city.example:50051"
    target = core_target("127.0.0.1:1,127.0.0.2:2")
    assert target.target == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert target.authority == "127.0.0.1:1"
    assert core_target("[::1]:1,[::1]:2").target == "ipv6:[::1]:1,[::1]:2"


@pytest.mark.parametrize(("addresses", "problem"), [
    ("", "empty entry"),
    ("127.0.0.1:1,", "empty entry"),
    ("127.0.0.1", "not HOST:PORT"),
    ("127.0.0.1:0", "not HOST:PORT"),
    ("127.0.0.1:99999", "not HOST:PORT"),
    ("127.0.0.1:1,127.0.0.1:1", "given twice"),
    (",".join(f"127.0.0.1:{p}" for p in range(1, 40)), "more than 32"),
])
def test_a_bad_address_list_is_refused_naming_the_entry(addresses: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        split_addresses(addresses)


def test_mixed_families_are_refused() -> None:
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        core_target("127.0.0.1:1,[::1]:2")
