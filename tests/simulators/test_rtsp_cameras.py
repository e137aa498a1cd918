"""The simulated cameras are real RTSP: a real server read by a real client (FFmpeg via PyAV)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import re
import threading
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import av
import av.error
import pytest
from structlog.testing import capture_logs

from simulators.rtsp_launcher import (
    CameraServerError,
    Fault,
    RtspCameraServer,
    UnknownCamera,
    server_unavailable_reason,
)

_UNAVAILABLE = server_unavailable_reason()
pytestmark = pytest.mark.skipif(
    _UNAVAILABLE is not None,
    reason=(
        "simulated RTSP cameras need GStreamer's RTSP server for /usr/bin/python3 "
        f"(apt packages in .ci/apt-packages-rtsp.txt): {_UNAVAILABLE}"
    ),
)

# Small and slow pictures keep the CPU low for whoever else runs tests.
SIZE = (320, 240)
FPS = 10
BITRATE_KBPS = 300
CAMERAS = ["cam-a", "cam-b"]
OPEN_OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "100000", "probesize": "32768"}
OPEN_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 8.0


def serve(
    *,
    gop_s: float = 1.0,
    credentials: tuple[str, str] | None = None,
    faults_at_start: dict[str, Fault | str] | None = None,
) -> RtspCameraServer:
    return RtspCameraServer(
        CAMERAS, gop_s=gop_s, fps=FPS, size=SIZE, bitrate_kbps=BITRATE_KBPS, port=0,
        credentials=credentials, faults_at_start=faults_at_start,
    )


@pytest.fixture
async def server() -> AsyncIterator[RtspCameraServer]:
    async with serve() as running:
        yield running


def open_rtsp(url: str) -> av.container.InputContainer:
    return av.open(url, options=OPEN_OPTIONS, timeout=(OPEN_TIMEOUT_S, READ_TIMEOUT_S))


@dataclasses.dataclass(frozen=True)
class StreamSample:
    codec: str
    profile: str | None
    keyframe_indices: list[int]
    frame_size: tuple[int, int]


def sample_stream(url: str, packets: int) -> StreamSample:
    """Demux ``packets`` packets; decode the first key frame to learn the picture size."""
    with open_rtsp(url) as container:
        stream = container.streams.video[0]
        keyframes: list[int] = []
        frame_size = (0, 0)
        for index, packet in enumerate(container.demux(stream)):
            if packet.size == 0:
                continue
            if packet.is_keyframe:
                keyframes.append(index)
                if frame_size == (0, 0):
                    for frame in packet.decode():
                        frame_size = (frame.width, frame.height)
            if index + 1 >= packets:
                break
        return StreamSample(
            stream.codec_context.name, stream.codec_context.profile, keyframes, frame_size
        )


class PacketReader:
    """One RTSP viewer on a worker thread; packet arrival times come out of a bounded queue."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self._arrivals: asyncio.Queue[float | None] = asyncio.Queue(maxsize=1000)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.ended_by: str | None = None

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        container = await asyncio.to_thread(open_rtsp, self._url)
        self._task = asyncio.create_task(asyncio.to_thread(self._demux, container))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def next_packet(self, timeout: float) -> float:
        """Arrival time of the next packet; TimeoutError if none comes within ``timeout``."""
        async with asyncio.timeout(timeout):
            arrival = await self._arrivals.get()
        if arrival is None:
            raise EOFError(f"stream ended: {self.ended_by}")
        return arrival

    def _demux(self, container: av.container.InputContainer) -> None:
        try:
            for _packet in container.demux(container.streams.video[0]):
                self._publish(time.monotonic())
                if self._stop.is_set():
                    break
            else:
                self.ended_by = "end of stream"
        except av.error.FFmpegError as exc:
            self.ended_by = repr(exc)
        finally:
            container.close()
            if not self._stop.is_set():
                self._publish(None)

    def _publish(self, arrival: float | None) -> None:
        self._loop.call_soon_threadsafe(self._offer, arrival)

    def _offer(self, arrival: float | None) -> None:
        try:
            self._arrivals.put_nowait(arrival)
        except asyncio.QueueFull:
            self.dropped += 1  # nobody is reading: a test that stopped caring


async def assert_refused(url: str) -> None:
    with pytest.raises(av.error.HTTPNotFoundError):
        await asyncio.to_thread(open_rtsp, url)


async def assert_streams(url: str) -> None:
    sample = await asyncio.to_thread(sample_stream, url, 3)
    assert sample.codec == "h264"


# --- the stream --------------------------------------------------------------


@pytest.mark.parametrize(("gop_s", "frames_per_gop"), [(1.0, 10), (0.5, 5)])
async def test_each_camera_serves_h264_with_the_configured_gop_and_size(
    gop_s: float, frames_per_gop: int
) -> None:
    async with serve(gop_s=gop_s) as server:
        assert list(server.urls) == CAMERAS
        for cam, url in server.urls.items():
            assert re.fullmatch(rf"rtsp://127\.0\.0\.1:\d+/cam/{cam}", url)
        samples = await asyncio.gather(
            *(asyncio.to_thread(sample_stream, url, 2 * frames_per_gop + 12)
              for url in server.urls.values())
        )
    for sample in samples:
        assert sample.codec == "h264"
        assert sample.profile == "Constrained Baseline"
        assert sample.frame_size == SIZE
        assert len(sample.keyframe_indices) >= 3
        gaps = [b - a for a, b in itertools.pairwise(sample.keyframe_indices)]
        assert all(abs(gap - frames_per_gop) <= 1 for gap in gaps), sample.keyframe_indices


async def test_two_viewers_of_one_camera_share_one_encoder(server: RtspCameraServer) -> None:
    url = server.urls["cam-a"]
    async with PacketReader(url) as first, PacketReader(url) as second:
        for reader in (first, second):
            for _ in range(5):
                await reader.next_packet(timeout=3)
        status = await server.status("cam-a")
        assert (status.pipelines, status.clients) == (1, 2)
    assert (await server.status("cam-b")).pipelines == 0  # nobody watches: no encoder


# --- faults ------------------------------------------------------------------


async def test_refuse_at_start_fails_the_first_connect_until_resume() -> None:
    async with serve(faults_at_start={"cam-b": "refuse"}) as server:
        await assert_refused(server.urls["cam-b"])
        await assert_streams(server.urls["cam-a"])

        await server.set_fault("cam-b", Fault.RESUME)
        await assert_streams(server.urls["cam-b"])

        await server.set_fault("cam-b", Fault.REFUSE)
        await assert_refused(server.urls["cam-b"])
        assert (await server.status("cam-b")).refusing


async def test_stall_stops_packets_on_an_open_connection_until_resume(
    server: RtspCameraServer,
) -> None:
    async with PacketReader(server.urls["cam-a"]) as reader:
        await reader.next_packet(timeout=3)

        await server.set_fault("cam-a", Fault.STALL)
        in_flight = 0
        with pytest.raises(TimeoutError):
            while True:
                await reader.next_packet(timeout=2.2)
                in_flight += 1
                assert in_flight <= 3, "packets kept flowing after stall"
        assert (await server.status("cam-a")).stalled

        await server.set_fault("cam-a", Fault.RESUME)
        for _ in range(5):
            await reader.next_packet(timeout=3)


async def test_stop_ends_the_stream_of_watching_clients_and_accepts_new_ones(
    server: RtspCameraServer,
) -> None:
    async with PacketReader(server.urls["cam-a"]) as reader:
        await reader.next_packet(timeout=3)
        await server.set_fault("cam-a", Fault.STOP)
        with pytest.raises(EOFError):
            while True:
                await reader.next_packet(timeout=3)
    await assert_streams(server.urls["cam-a"])


async def test_faults_name_a_served_camera_and_a_known_fault(server: RtspCameraServer) -> None:
    with pytest.raises(UnknownCamera):
        await server.set_fault("cam-z", Fault.STALL)
    with pytest.raises(ValueError):
        await server.set_fault("cam-a", "explode")
    with pytest.raises(UnknownCamera):
        serve(faults_at_start={"cam-z": "refuse"})


# --- auth --------------------------------------------------------------------


async def test_credentials_are_required_and_never_printed() -> None:
    password = "pa55-Wd"
    with capture_logs() as logs:
        async with serve(credentials=("viewer", password)) as server:
            url = server.urls["cam-a"]
            with pytest.raises(av.error.HTTPUnauthorizedError):
                await asyncio.to_thread(open_rtsp, url)
            with pytest.raises(av.error.HTTPUnauthorizedError):
                await asyncio.to_thread(open_rtsp, url.replace("rtsp://", "rtsp://viewer:nope@"))
            await assert_streams(url.replace("rtsp://", f"rtsp://viewer:{password}@"))
            assert password not in " ".join(server.urls.values())
    assert logs and password not in repr(logs)


# --- the process -------------------------------------------------------------


async def test_a_server_that_cannot_start_raises_and_leaves_nothing_behind() -> None:
    broken = RtspCameraServer(CAMERAS, python="/nonexistent/python3")
    with pytest.raises(CameraServerError):
        async with broken:
            pytest.fail("a server without a python started")
    assert broken.urls == {}


async def test_close_stops_the_server_process(server: RtspCameraServer) -> None:
    pid = server.pid
    await server.close()
    await server.close()  # idempotent
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
