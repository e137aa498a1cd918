"""A core that cannot start leaves nothing running: what had started is stopped, in reverse."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer


def _threads() -> set[threading.Thread]:
    """Live threads, less the event loop's own default-executor workers (``asyncio_N``):
    the loop owns and reuses those (``to_thread``, name lookups) and shuts them down itself."""
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _running() -> tuple[set[asyncio.Task[object]], set[threading.Thread]]:
    return asyncio.all_tasks(), _threads()


@pytest.mark.parametrize("which", ["grpc", "console"])
async def test_a_taken_port_is_a_clear_error_and_leaves_nothing_running(
        core_config: CoreConfig, taken_port: int, which: str) -> None:
    if which == "grpc":
        config = replace(core_config, listen=f"127.0.0.1:{taken_port}")
    else:
        config = replace(core_config, http_listen=f"127.0.0.1:{taken_port}")
    tasks_before, threads_before = _running()
    server = CoreServer(config)
    with pytest.raises(OSError, match=str(taken_port)) as caught:
        async with server:
            pytest.fail("the core started on a taken port")
    if which == "grpc":
        assert f"cannot listen on 127.0.0.1:{taken_port}" in str(caught.value)
    # grpc's poller thread lives as long as the server object, which the traceback's frames
    # hold: let the error go, as its caller would, before counting threads.
    del caught
    gc.collect()
    tasks_after, threads_after = _running()
    assert tasks_after - tasks_before == set()
    assert threads_after - threads_before == set()
    assert (server.registry, server.audit, server.console) == (None, None, None)
    await server.close()  # idempotent after a failed start


async def test_a_started_core_stops_everything_it_started(core_config: CoreConfig) -> None:
    tasks_before, threads_before = _running()
    async with CoreServer(core_config) as server:
        await server.wait_connected()
        assert {t.get_name() for t in asyncio.all_tasks() - tasks_before} >= {"grant-sweeper"}
    assert asyncio.all_tasks() - tasks_before == set()
    assert _threads() - threads_before == set()
