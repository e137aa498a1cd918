"""A real coturn on loopback for the tests (REST credentials, relaying to loopback peers), and
a TURN allocation with a credential: shared by the integration and console TURN tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aioice.stun
import aioice.turn

from provisioning.turn_server import TurnServerOptions, write_turn_files
from runtime.turn_credentials import rest_credential
from safetynet.broker import free_port


class _Nothing(asyncio.DatagramProtocol):
    pass


async def turn_allocate(port: int, username: str, password: str) -> tuple[str, int]:
    """Allocate a relay on the coturn at ``port`` with a REST credential; its relayed address."""
    transport, _ = await aioice.turn.create_turn_endpoint(
        _Nothing, ("127.0.0.1", port), username, password)
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


@contextlib.asynccontextmanager
async def running_coturn(folder: Path, secret: str) -> AsyncIterator[int]:
    """coturn with ``secret`` as its REST secret, files in ``folder``; yields its port once it
    answers an allocation."""
    port = free_port()
    relay_from = 40000 + port % 20000
    options = TurnServerOptions(realm="turn.test", listening_ip="127.0.0.1", port=port,
                                relay_ip="127.0.0.1", min_port=relay_from,
                                max_port=min(relay_from + 200, 65535), deny_private=False,
                                allow_loopback_peers=True)
    config, _ = write_turn_files(folder, options, secret=secret)
    process = await asyncio.create_subprocess_exec(
        "turnserver", "-c", str(config), "--no-stdout-log", "--log-file", str(folder / "turn.log"),
        "--pidfile", str(folder / "turn.pid"), "--userdb", str(folder / "turn.db"),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        username, password = rest_credential(secret, "probe", int(time.time()) + 60)
        deadline = time.monotonic() + 10
        while True:  # coturn says nothing when it is ready: allocate until it answers
            try:
                async with asyncio.timeout(1):
                    await turn_allocate(port, username, password)
                break
            except (TimeoutError, ConnectionError, aioice.stun.TransactionFailed):
                if time.monotonic() > deadline or process.returncode is not None:
                    raise
                await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        await process.wait()
