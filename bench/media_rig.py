"""What the media benchmarks stand on.

Simulated RTSP cameras (GStreamer, their own process), a Mosquitto broker, the core (in the
benchmark's process, with a district operator's token), and one district's edge agent in a
process of its own (``bench/agent_process.py``), so that its CPU time can be read from /proc
without the viewers' or the cameras' mixed in. Viewers are aiortc peers in the benchmark's
process, talking to the agent through the core as an operator's viewer does.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiortc.rtcrtpreceiver
import av
from aiortc.codecs import get_decoder

import cloud_core
from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker
from simulators.agent_configs import agent_config_text
from simulators.pilot_districts import GANGNAM
from simulators.rtsp_launcher import RtspCameraServer
from viewer.client import CameraViewer

SHIPPED_POLICY = Path(cloud_core.__file__).with_name("policy.toml")

AGENT_PROCESS = Path(__file__).with_name("agent_process.py")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def summary(values: Sequence[float], *, percentiles: Sequence[int] = (95,),
            digits: int = 1) -> dict[str, float]:
    """min / p50 / the given percentiles / max (nearest rank), rounded to ``digits``.

    Every benchmark prints its latencies through this one function, so figures compare.
    """
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    figures = {"min": ordered[0], "p50": statistics.median(ordered),
               **{f"p{p}": pct(p) for p in percentiles}, "max": ordered[-1]}
    return {name: round(value, digits) for name, value in figures.items()}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


async def cpu_percent(pid: int, seconds: float) -> float:
    """Percent of one core the process used over the next ``seconds``."""
    start_cpu, start = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - start_cpu) / (time.monotonic() - start)


def count_frames_without_decoding() -> None:
    """Make this process's aiortc receivers decode only their first frame.

    The benchmarks measure the agent, not the viewers: twenty viewers decoding 720p in one
    Python process would starve the two cores the agent runs on. Every later frame is counted
    (the first decoded picture is handed on again) but never decoded.
    """

    def worker(loop: asyncio.AbstractEventLoop, input_q: Any, output_q: asyncio.Queue[Any],
               decode_error: Any) -> None:
        decoder, picture = None, None
        while True:
            task = input_q.get()
            if task is None:
                asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
                return
            codec, encoded_frame = task
            if picture is None:
                decoder = decoder or get_decoder(codec)
                try:
                    frames = decoder.decode(encoded_frame)
                except av.FFmpegError:
                    continue  # joined mid-GOP without a key frame: wait for one, as aiortc does
                if not frames:
                    continue
                picture = frames[0]
            asyncio.run_coroutine_threadsafe(output_q.put(picture), loop)

    aiortc.rtcrtpreceiver.decoder_worker = worker


class MediaRig:
    """Cameras, broker, core and one agent process; an async context manager."""

    def __init__(self, camera_ids: Sequence[str], *, gop_s: float = 1.0, fps: int = 15,
                 size: tuple[int, int] = (1280, 720), bitrate_kbps: int = 2500,
                 agent_args: Sequence[str] = (), agent_log_level: str = "warning",
                 transport: str = "tcp", webrtc: WebRtcSettings | None = None,
                 pattern: str = "ball", core_options: dict[str, Any] | None = None) -> None:
        self.camera_ids = list(camera_ids)
        self._transport = transport
        self._camera_options = {"gop_s": gop_s, "fps": fps, "size": size,
                                "bitrate_kbps": bitrate_kbps, "pattern": pattern}
        self._agent_args = list(agent_args)
        self._agent_log_level = agent_log_level
        self._core_options = core_options or {}  # e.g. relay_keys (bench/relay_fanout.py)
        self._tmp = tempfile.TemporaryDirectory(prefix="safetynet-bench-")
        self.webrtc = webrtc or WebRtcSettings.loopback()
        self.cameras: RtspCameraServer | None = None
        self.broker: MosquittoBroker | None = None
        self.core: CoreServer | None = None
        self.agent: asyncio.subprocess.Process | None = None
        self.token = ""

    @property
    def state_dir(self) -> Path:
        return Path(self._tmp.name)

    @property
    def agent_pid(self) -> int:
        assert self.agent is not None
        return self.agent.pid

    async def __aenter__(self) -> Self:
        state = Path(self._tmp.name)
        self.cameras = RtspCameraServer(self.camera_ids, **self._camera_options)  # type: ignore[arg-type]
        await self.cameras.start()
        self.broker = MosquittoBroker(work_dir=state)
        await self.broker.start()
        # Benchmarks measure what the agent carries, not the city's fair shares: one operator
        # watches 60 viewers' worth, past the shipped [session_caps].
        policy = state / "bench-policy.toml"
        policy.write_text(SHIPPED_POLICY.read_text(encoding="utf-8")
                          .replace("per_operator = 16", "per_operator = 10000", 1)
                          .replace("standing_per_agency = 64", "standing_per_agency = 10000", 1),
                          encoding="utf-8")
        options = {"policy_file": policy, **self._core_options}
        core_config = CoreConfig(database=state / "core.sqlite3", listen="127.0.0.1:0",
                                 broker=BrokerSettings(host=self.broker.host, port=self.broker.port),
                                 **options)
        self.core = CoreServer(core_config)
        await self.core.__aenter__()
        assert self.core.access is not None
        _, self.token = self.core.access.operators.add(
            "bench-op", agency=f"district:{GANGNAM.district_id}", role="operator",
            policy=self.core.access.policy)
        config = state / "agent.toml"
        text = agent_config_text(
            GANGNAM, broker_host=self.broker.host, broker_port=self.broker.port, source="sim:",
            idle_close_seconds=30, sources=dict(self.cameras.urls),
            grant_public_key=core_config.grant_public_key_path,
        )
        # Benchmarks measure what the agent can carry, not the district's uplink budget.
        text = text.replace("[agent]\n", "[agent]\nuplink_streams = 0\n", 1)
        config.write_text("\n".join(
            line + f'\ntransport = "{self._transport}"' if line.startswith('source = "rtsp') else line
            for line in text.splitlines()) + "\n")
        self.agent = await asyncio.create_subprocess_exec(
            sys.executable, str(AGENT_PROCESS), "--config", str(config),
            "--log-level", self._agent_log_level, *self._agent_args,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
        )
        await self.core.wait_until(
            lambda r: all((c := r.camera(cid)) is not None and c.agent_online
                          for cid in self.camera_ids), 30)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self.agent is not None and self.agent.returncode is None:
            self.agent.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.agent.wait()
            except TimeoutError:
                self.agent.kill()
                await self.agent.wait()
        if self.core is not None:
            await self.core.__aexit__(None, None, None)
        if self.broker is not None:
            await self.broker.stop()
        if self.cameras is not None:
            await self.cameras.close()
        self._tmp.cleanup()

    def viewer(self, camera_id: str) -> CameraViewer:
        assert self.core is not None
        return CameraViewer(self.core.address, camera_id, webrtc=self.webrtc, token=self.token)
