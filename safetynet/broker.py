"""A Mosquitto broker of our own: for the demo and the tests, on a loopback port.

The embedded Python broker (amqtt) mishandles retained state and last wills, so we always run the
real Mosquitto, each instance with its own config, on its own port, persisting nothing.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from provisioning.broker_config import CITY_QUEUE_LIMITS
from runtime.exceptions import BrokerError

log = structlog.get_logger(__name__)

READY_MARKER = b" running"

# The city's queue limits (why: provisioning/broker_config.py): the tests' and the demo's broker
# must not drop a city-wide burst either.


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if found is None:
        raise BrokerError("mosquitto is not installed: apt-get install mosquitto")
    return found


class MosquittoBroker:
    """Runs ``mosquitto`` as a child process; an async context manager.

    ``extra_config`` is appended to the generated config (e.g. a TLS listener from provisioning);
    without it the broker listens on ``host:port`` in plain MQTT and allows anonymous clients —
    acceptable for loopback only, which is all this class binds by default.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, config: str | None = None,
                 work_dir: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._config = config
        self._work_dir = work_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self.log_lines: list[str] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def config_text(self) -> str:
        if self._config is not None:
            return self._config
        return "\n".join([
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            *CITY_QUEUE_LIMITS,
            "",
        ])

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def start(self, timeout: float = 10.0) -> None:
        """Start (or restart, on the same port) and return once it accepts connections."""
        if self._process is not None:
            raise BrokerError("broker already running")
        if self._work_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="safetynet-mosquitto-")
            self._work_dir = Path(self._tmp.name)
        conf = self._work_dir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self._process = await asyncio.create_subprocess_exec(
            mosquitto_binary(), "-c", str(conf),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        ready = asyncio.get_running_loop().create_future()
        self._stderr_task = asyncio.create_task(
            self._read_stderr(self._process, ready), name="mosquitto-stderr")
        try:
            async with asyncio.timeout(timeout):
                await ready
        except (TimeoutError, BrokerError) as exc:
            tail = "\n".join(self.log_lines[-10:])
            await self.stop()
            raise BrokerError(f"mosquitto did not start on {self.host}:{self.port}: {tail or exc}") from exc
        log.info("mosquitto running", host=self.host, port=self.port, pid=self._process.pid)

    async def _read_stderr(self, process: asyncio.subprocess.Process,
                           ready: asyncio.Future[None]) -> None:
        assert process.stderr is not None
        while line := await process.stderr.readline():
            self.log_lines.append(line.decode(errors="replace").rstrip())
            del self.log_lines[:-200]
            if READY_MARKER in line and not ready.done():
                ready.set_result(None)
        if not ready.done():
            ready.set_exception(BrokerError("mosquitto exited"))

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the broker (SIGTERM, or SIGKILL with ``kill``); idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            if kill:
                process.kill()
            else:
                process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._stderr_task is not None:
            await self._stderr_task
            self._stderr_task = None
