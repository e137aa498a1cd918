"""Start, steer and stop the simulated RTSP cameras from asyncio code.

The cameras themselves run in ``simulators/rtsp_cameras.py`` under the system
Python (GStreamer's bindings are not in the venv). ``RtspCameraServer`` owns
that subprocess: it starts it, waits until every camera URL has been printed,
sends fault commands over the subprocess's stdin and reads the replies from
its stdout, and stops it on exit::

    async with RtspCameraServer(["cam-a", "cam-b"], gop_s=1.0, fps=15) as server:
        url = server.urls["cam-a"]           # rtsp://127.0.0.1:PORT/cam/cam-a
        await server.set_fault("cam-a", Fault.STALL)
        await server.set_fault("cam-a", Fault.RESUME)

Errors::

    CameraServerError        the server could not start, died, or did not answer (detail)
    ├── UnknownCamera        no camera of that id is served (camera_id)
    └── ControlError         the server refused a control command (command, reply)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import csv
import dataclasses
import enum
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import structlog

from simulators.city import CityCamera, city_cameras
from simulators.pilot_districts import PILOT_DISTRICTS

logger = structlog.get_logger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_cameras.py")
CREDENTIALS_ENV = "SAFETYNET_RTSP_CREDENTIALS"  # same name in rtsp_cameras.py
_CAMERA_LINE = re.compile(r"(\S+) (rtsp://\S+)")


class CameraServerError(Exception):
    """The camera server could not start, died, or did not answer."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UnknownCamera(CameraServerError):
    def __init__(self, camera_id: str) -> None:
        super().__init__(f"no simulated camera {camera_id!r}")
        self.camera_id = camera_id


class ControlError(CameraServerError):
    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"camera server refused {command!r}: {reply}")
        self.command = command
        self.reply = reply


class Fault(enum.StrEnum):
    """What a simulated camera can be made to do at run time.

    ``REFUSE``: new clients are refused (DESCRIBE gets 404); clients already
    watching keep their stream. ``STOP``: every client now watching is
    disconnected, once; new clients are accepted (send ``REFUSE`` first to keep
    them out). ``STALL``: connections stay open, no more frames are sent, also
    to clients that connect meanwhile (if nobody was watching, their DESCRIBE
    waits). ``RESUME``: undo ``REFUSE`` and ``STALL``; frames flow again without
    waiting for a key frame (the encoder paused too).
    """

    REFUSE = "refuse"
    STOP = "stop"
    STALL = "stall"
    RESUME = "resume"


@dataclasses.dataclass(frozen=True)
class CameraStatus:
    """One camera as the server sees it; ``pipelines`` counts running encoders."""

    camera_id: str
    refusing: bool
    stalled: bool
    clients: int
    pipelines: int


class ServerState(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    CLOSED = "closed"


def server_unavailable_reason(python: str = SYSTEM_PYTHON) -> str | None:
    """Why the camera server cannot run here, or None when it can.

    It needs ``python`` with PyGObject and GStreamer's RTSP server typelib
    (Debian: see ``.ci/apt-packages-rtsp.txt``).
    """
    probe = "import gi; gi.require_version('GstRtspServer', '1.0')"
    try:
        result = subprocess.run(
            [python, "-I", "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{python} cannot run: {exc}"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return f"{python} lacks GStreamer's RTSP server bindings: {last}"
    return None


class RtspCameraServer:
    """Simulated cameras served over RTSP on 127.0.0.1 by a GStreamer subprocess.

    Every camera is ``rtsp://127.0.0.1:PORT/cam/<camera_id>``: H.264
    constrained-baseline at ``size`` and ``fps``, a key frame every ``gop_s``
    seconds, constant ``bitrate_kbps`` (padded with filler data, as the picture
    is simple), showing the camera id, a wall clock and a moving ball. One
    encoder per watched camera, none for an unwatched one. ``credentials``
    ``(user, password)`` turns on basic and digest auth for every camera.
    ``faults_at_start`` applies faults before the first client can connect.
    ``port=0`` lets the server pick a free port. ``codec`` "h265" or "mjpeg"
    stands in for cameras whose video cannot pass through to WebRTC.
    """

    def __init__(
        self,
        cameras: Sequence[str],
        *,
        gop_s: float = 1.0,
        fps: int = 15,
        size: tuple[int, int] = (1280, 720),
        bitrate_kbps: int = 2500,
        port: int = 0,
        credentials: tuple[str, str] | None = None,
        faults_at_start: Mapping[str, Fault | str] | None = None,
        codec: str = "h264",
        pattern: str = "ball",
        python: str = SYSTEM_PYTHON,
        start_timeout_s: float = 15.0,
        reply_timeout_s: float = 5.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if not cameras:
            raise ValueError("at least one camera id is needed")
        self._camera_ids = list(cameras)
        self._faults_at_start = {cid: Fault(f) for cid, f in (faults_at_start or {}).items()}
        for camera_id in self._faults_at_start:
            if camera_id not in self._camera_ids:
                raise UnknownCamera(camera_id)
        self._argv = [
            python, "-I", str(SERVER_SCRIPT),
            "--port", str(port),
            "--cameras", ",".join(self._camera_ids),
            "--gop", repr(float(gop_s)),
            "--fps", str(fps),
            "--size", f"{size[0]}x{size[1]}",
            "--bitrate", str(bitrate_kbps),
            "--codec", codec,
            "--pattern", pattern,
        ]
        for camera_id, fault in self._faults_at_start.items():
            self._argv += ["--fault-at-start", f"{camera_id}={fault}"]
        self._credentials = credentials
        self._start_timeout_s = start_timeout_s
        self._reply_timeout_s = reply_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._log = logger.bind(cameras=len(self._camera_ids))
        self._state = ServerState.NEW
        self._process: asyncio.subprocess.Process | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._control_lock = asyncio.Lock()
        self.urls: dict[str, str] = {}

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def pid(self) -> int:
        """The server process's id (to measure its CPU, for instance)."""
        if self._process is None:
            raise CameraServerError(f'Cannot give a pid in state "{self._state.value}"')
        return self._process.pid

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the subprocess and wait until it has printed every camera's URL."""
        if self._state is not ServerState.NEW:
            raise CameraServerError(f'Cannot start in state "{self._state.value}"')
        self._set_state(ServerState.STARTING)
        env = dict(os.environ)
        env.pop(CREDENTIALS_ENV, None)
        if self._credentials is not None:
            user, password = self._credentials
            env[CREDENTIALS_ENV] = f"{user}:{password}"
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
            )
        except OSError as exc:
            self._set_state(ServerState.CLOSED)
            raise CameraServerError(f"cannot run {self._argv[0]}: {exc}") from exc
        self._log = self._log.bind(pid=self._process.pid)
        self._stderr_task = asyncio.create_task(self._pump_stderr(), name="rtsp-server-stderr")
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await self._read_urls()
        except BaseException as exc:
            await self.close()
            if isinstance(exc, TimeoutError):
                raise CameraServerError(
                    f"camera server printed no URLs within {self._start_timeout_s} s"
                ) from exc
            raise
        self._set_state(ServerState.RUNNING)

    async def set_fault(self, camera_id: str, fault: Fault | str) -> None:
        """Apply ``fault`` to one camera; returns once the server has applied it."""
        fault = Fault(fault)
        await self._command(camera_id, f"fault {camera_id} {fault.value}")
        self._log.info("fault set", camera=camera_id, fault=fault.value)

    async def status(self, camera_id: str) -> CameraStatus:
        """How many clients and encoders one camera has, and its faults."""
        reply = await self._command(camera_id, f"status {camera_id}")
        fields = dict(word.split("=", 1) for word in reply.split()[2:])
        return CameraStatus(
            camera_id=camera_id,
            refusing=fields["refusing"] == "1",
            stalled=fields["stalled"] == "1",
            clients=int(fields["clients"]),
            pipelines=int(fields["pipelines"]),
        )

    async def close(self) -> None:
        """Stop the subprocess (terminate, then kill after a timeout). Idempotent."""
        if self._state is ServerState.CLOSED:
            return
        self._set_state(ServerState.CLOSED)
        process = self._process
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            if process.returncode is None:
                process.terminate()
            try:
                async with asyncio.timeout(self._stop_timeout_s):
                    await process.wait()
            except TimeoutError:
                self._log.warning("camera server ignored SIGTERM, killing it")
                process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.read()
        if self._stderr_task is not None:
            try:
                async with asyncio.timeout(self._stop_timeout_s):
                    await self._stderr_task
            except TimeoutError:
                self._stderr_task.cancel()
                await asyncio.gather(self._stderr_task, return_exceptions=True)
        self.urls.clear()

    # --- internals -----------------------------------------------------------

    def _set_state(self, state: ServerState) -> None:
        self._log.debug("camera server state", old=self._state.value, new=state.value)
        self._state = state

    async def _read_urls(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while len(self.urls) < len(self._camera_ids):
            raw = await self._process.stdout.readline()
            if not raw:
                raise CameraServerError(await self._death_notice())
            line = raw.decode("utf-8", "replace").strip()
            match = _CAMERA_LINE.fullmatch(line)
            if match is None or match[1] not in self._camera_ids:
                raise CameraServerError(f"unexpected line from camera server: {line!r}")
            self.urls[match[1]] = match[2]
        self._log.info("cameras served", urls=dict(self.urls))

    async def _command(self, camera_id: str, command: str) -> str:
        if self._state is not ServerState.RUNNING:
            raise CameraServerError(f'Cannot send {command!r} in state "{self._state.value}"')
        if camera_id not in self.urls:
            raise UnknownCamera(camera_id)
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        async with self._control_lock:
            try:
                process.stdin.write(command.encode() + b"\n")
                await process.stdin.drain()
                async with asyncio.timeout(self._reply_timeout_s):
                    raw = await process.stdout.readline()
            except (ConnectionError, TimeoutError) as exc:
                raise CameraServerError(f"no reply to {command!r}: {exc!r}") from exc
        if not raw:
            raise CameraServerError(await self._death_notice())
        reply = raw.decode("utf-8", "replace").strip()
        if reply.split()[:2] != ["ok", camera_id]:
            raise ControlError(command, reply)
        return reply

    async def _death_notice(self) -> str:
        assert self._process is not None
        try:
            async with asyncio.timeout(self._stop_timeout_s):
                code = await self._process.wait()
                if self._stderr_task is not None:
                    await asyncio.shield(self._stderr_task)
        except TimeoutError:
            code = None
        tail = " | ".join(self._stderr_tail) or "no output"
        return f"camera server closed its output (exit code {code}): {tail}"

    async def _pump_stderr(self) -> None:
        """Log the server's stderr and keep its last lines for error messages."""
        assert self._process is not None and self._process.stderr is not None
        while raw := await self._process.stderr.readline():
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr_tail.append(line)
            self._log.debug("camera server says", line=line)


# --- command line ------------------------------------------------------------


def pilot_camera_ids(district_id: str | None = None) -> tuple[str, ...]:
    """The pilot districts' camera ids (gangnam-001 …, mapo-001 …), or one district's."""
    return tuple(c.camera_id for d in PILOT_DISTRICTS
                 if district_id in (None, d.district_id) for c in d.cameras)


@dataclasses.dataclass(frozen=True)
class SimCamerasConfig:
    """Options of ``safetynet sim cameras``."""

    camera_ids: tuple[str, ...]
    gop_s: float = 1.0
    fps: int = 15
    size: tuple[int, int] = (1280, 720)
    bitrate_kbps: int = 2500
    port: int = 0
    credentials: tuple[str, str] | None = None
    faults_at_start: tuple[tuple[str, Fault], ...] = ()
    codec: str = "h264"
    places: tuple[CityCamera, ...] = ()   # district and position of the cameras that have one
    inventory: Path | None = None

    @classmethod
    def from_args(cls, argv: Sequence[str] | None) -> SimCamerasConfig:
        parser = argparse.ArgumentParser(
            prog="safetynet sim cameras",
            description="Serve simulated cameras as real RTSP streams on 127.0.0.1.",
        )
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--cameras", metavar="ID[,ID...]", help="camera ids to serve")
        which.add_argument("--count", type=int,
                           help="serve N cameras spread over the city's 25 districts in "
                                "proportion to their CCTV (ids <district>-0001 …)")
        which.add_argument("--district", choices=[d.district_id for d in PILOT_DISTRICTS],
                           help="serve one pilot district's cameras")
        parser.add_argument("--gop", type=float, default=1.0, metavar="SECONDS")
        parser.add_argument("--fps", type=int, default=15, metavar="N")
        parser.add_argument("--size", default="1280x720", metavar="WxH")
        parser.add_argument("--bitrate", type=int, default=2500, metavar="KBPS")
        parser.add_argument("--codec", choices=["h264", "h265", "mjpeg"], default="h264",
                            help="what the cameras send (h265 and mjpeg need transcode = true)")
        parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
        parser.add_argument("--credentials", metavar="USER:PASS", help="require RTSP auth")
        parser.add_argument("--inventory", metavar="FILE",
                            help="also write the cameras as an inventory CSV (id, name, district "
                                 "position, stream URL) for an agent's cameras_file")
        parser.add_argument(
            "--fault-at-start", action="append", default=[], metavar="CAMERA=FAULT",
            help="e.g. cam-01=refuse (repeatable)",
        )
        args = parser.parse_args(argv)
        if args.cameras:
            camera_ids = tuple(c for c in args.cameras.split(",") if c)
        elif args.count is not None:
            if args.count < 1:
                parser.error("--count must be at least 1")
            places = {c.camera_id: c for c in city_cameras(args.count)}
            camera_ids = tuple(places)
        else:
            camera_ids = pilot_camera_ids(args.district)
        if args.count is None:
            places = {c.camera_id: c for c in _pilot_places() if c.camera_id in camera_ids}
        size = re.fullmatch(r"(\d+)x(\d+)", args.size)
        if size is None:
            parser.error(f"--size {args.size!r} is not WIDTHxHEIGHT")
        credentials = None
        if args.credentials is not None:
            user, sep, password = args.credentials.partition(":")
            if not sep or not user:
                parser.error("--credentials wants USER:PASS")
            credentials = (user, password)
        faults = []
        for item in args.fault_at_start:
            camera_id, _, fault = item.partition("=")
            if camera_id not in camera_ids or fault not in {f.value for f in Fault}:
                parser.error(f"--fault-at-start {item!r}: want CAMERA=FAULT for a served camera")
            faults.append((camera_id, Fault(fault)))
        return cls(
            camera_ids=camera_ids, gop_s=args.gop, fps=args.fps,
            size=(int(size[1]), int(size[2])), bitrate_kbps=args.bitrate, port=args.port,
            credentials=credentials, faults_at_start=tuple(faults), codec=args.codec,
            places=tuple(places.values()),
            inventory=Path(args.inventory) if args.inventory else None,
        )


async def serve(config: SimCamerasConfig) -> None:
    """Serve the cameras, print ``CAMERA_ID URL`` lines, run until cancelled."""
    async with RtspCameraServer(
        config.camera_ids, gop_s=config.gop_s, fps=config.fps, size=config.size,
        bitrate_kbps=config.bitrate_kbps, port=config.port, credentials=config.credentials,
        faults_at_start=dict(config.faults_at_start), codec=config.codec,
    ) as server:
        places = {c.camera_id: c for c in config.places}
        if config.inventory is not None:
            write_inventory(config.inventory, server.urls, places)
        for camera_id, url in server.urls.items():
            place = places.get(camera_id)
            where = f"  # {place.district_id} {place.lat:.6f},{place.lon:.6f}" if place else ""
            print(camera_id, url + where, flush=True)
        await asyncio.Event().wait()


def _pilot_places() -> list[CityCamera]:
    return [CityCamera(c.camera_id, d.district_id, c.name, c.lat, c.lon)
            for d in PILOT_DISTRICTS for c in d.cameras]


def write_inventory(path: Path, urls: Mapping[str, str], places: Mapping[str, CityCamera]) -> Path:
    """An inventory CSV (``runtime.camera_inventory`` format) of the placed cameras served."""
    rows = [(places[cid], url) for cid, url in urls.items() if cid in places]
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["id", "name", "lat", "lon", "stream_url", "type", "address", "notes"])
        for place, url in rows:
            out.writerow([place.camera_id, place.name, place.lat, place.lon, url, "fixed", "",
                          f"district {place.district_id}"])
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``safetynet sim cameras``: serve until Ctrl-C. The caller configures logging."""
    config = SimCamerasConfig.from_args(argv)
    try:
        asyncio.run(serve(config))
    except KeyboardInterrupt:
        return 0
    except CameraServerError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from runtime.logs import configure_logging

    configure_logging("warning")
    sys.exit(main())
