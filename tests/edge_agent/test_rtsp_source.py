"""RtspSource against real RTSP: the simulated cameras' GStreamer server, read by FFmpeg (PyAV)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from structlog.testing import capture_logs

from edge_agent.camera_sources import RtspSource, source_for
from edge_agent.camera_sources.base import EncodedPacket
from edge_agent.camera_sources.h264 import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    ParameterSets,
    annex_b_from_avcc,
    nal_type,
    nal_units,
)
from edge_agent.camera_sources.rtsp import RtspTarget, redact_url
from edge_agent.camera_sources.transcoder import H264Transcoder
from edge_agent.config import CameraConfig, RtspSettings
from edge_agent.exceptions import SourceError
from simulators.rtsp_launcher import Fault, RtspCameraServer, server_unavailable_reason

_UNAVAILABLE = server_unavailable_reason()
needs_server = pytest.mark.skipif(_UNAVAILABLE is not None,
                                  reason=f"simulated RTSP cameras unavailable: {_UNAVAILABLE}")

USER, PASSWORD = "viewer", "s3cr3t-Pa55"
FAST = RtspSettings(open_timeout_seconds=2.0, stall_seconds=1.5)


def serve(cameras: tuple[str, ...] = ("cam-a",), **options: object) -> RtspCameraServer:
    """Small, slow pictures: little CPU for whoever else runs tests."""
    settings: dict[str, object] = {"gop_s": 1.0, "fps": 10, "size": (320, 240),
                                   "bitrate_kbps": 300, "credentials": (USER, PASSWORD)}
    settings.update(options)
    return RtspCameraServer(list(cameras), **settings)  # type: ignore[arg-type]


def with_credentials(url: str, user: str = USER, password: str = PASSWORD) -> str:
    return url.replace("rtsp://", f"rtsp://{user}:{password}@")


def camera(url: str, *, transport: str = "tcp", transcode: bool = False) -> CameraConfig:
    return CameraConfig("cam-a", "Camera A", 37.5, 127.0, url, transport=transport,
                        transcode=transcode)


async def take(source: RtspSource, count: int) -> list[EncodedPacket]:
    packets: list[EncodedPacket] = []
    async with contextlib.aclosing(source.packets()) as stream:
        async for packet in stream:
            packets.append(packet)
            if len(packets) >= count:
                break
    return packets


async def failure(source: RtspSource, timeout: float = 10.0) -> SourceError:
    with pytest.raises(SourceError) as caught:
        async with asyncio.timeout(timeout):
            await take(source, 10_000)
    return caught.value


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word: a camera that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"rtsp://127.0.0.1:{listener.getsockname()[1]}/cam/hung"


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"rtsp://127.0.0.1:{port}/cam/nobody"


@pytest.fixture
async def server() -> AsyncIterator[RtspCameraServer]:
    async with serve() as running:
        yield running


# --- addresses and credentials ----------------------------------------------------------------


def test_target_keeps_credentials_out_of_url_and_repr() -> None:
    target = RtspTarget.parse("rtsp://admin:p%40ss@10.0.0.5:8554/Streaming/101?ch=1", "udp")
    assert target.url == "rtsp://10.0.0.5:8554/Streaming/101?ch=1"
    assert (target.username, target.password, target.transport) == ("admin", "p%40ss", "udp")
    assert target.authenticated_url == "rtsp://admin:p%40ss@10.0.0.5:8554/Streaming/101?ch=1"
    assert (target.host, target.port) == ("10.0.0.5", 8554)
    assert "p%40ss" not in repr(target) and "admin" not in repr(target)
    assert RtspTarget.parse("rtsp://[fe80::1]/x").port == 554
    ffmpeg_says = "Server returned 401: 'rtsp://admin:p%40ss@10.0.0.5:8554/Streaming/101?ch=1'"
    assert "p%40ss" not in target.redact(ffmpeg_says)
    assert redact_url("see rtsp://u:pw@h/x and RTSPS://a:b@c/") == "see rtsp://***@h/x and RTSPS://***@c/"
    source = source_for(camera("rtsp://admin:pw@10.0.0.5/x"), "gangnam")
    assert isinstance(source, RtspSource) and "pw" not in repr(source)
    with pytest.raises(ValueError, match="transport"):
        RtspTarget.parse("rtsp://h/x", "sctp")


def test_key_frames_get_the_parameter_sets_the_camera_announced_only_in_the_sdp() -> None:
    sps, pps = b"\x67\x42\xc0\x1e\xda", b"\x68\xce\x3c\x80"
    avcc = b"\x01\x42\xc0\x1e\xff\xe1" + len(sps).to_bytes(2, "big") + sps + b"\x01" + \
        len(pps).to_bytes(2, "big") + pps
    assert annex_b_from_avcc(avcc) == b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps
    assert annex_b_from_avcc(b"\x01\x42") == b""
    sets = ParameterSets(avcc)
    idr, delta = b"\x00\x00\x00\x01\x65\x88\x84", b"\x00\x00\x00\x01\x41\x9a"
    assert [nal_type(u) for u in nal_units(sets.complete(idr, keyframe=True))] == \
        [NAL_SPS, NAL_PPS, NAL_IDR]
    assert sets.complete(delta, keyframe=False) == delta
    in_band = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x01" + pps + idr
    assert sets.complete(in_band, keyframe=True) == in_band  # already complete: untouched


# --- the stream -----------------------------------------------------------------------------


@needs_server
@pytest.mark.parametrize("transport", ["tcp", "udp"])
async def test_yields_annex_b_access_units_with_parameter_sets_before_key_frames(
        server: RtspCameraServer, transport: str) -> None:
    source = RtspSource(camera(with_credentials(server.urls["cam-a"]), transport=transport), FAST)
    packets = await take(source, 12)
    assert source.opens == 1 and source.codec == "h264" and not source.transcoding
    assert all(p.data.startswith((b"\x00\x00\x00\x01", b"\x00\x00\x01")) for p in packets)
    keyframes = [p for p in packets if p.keyframe]
    assert keyframes, "no key frame in 1.2 s of a 1 s GOP"
    for key in keyframes:
        assert {NAL_SPS, NAL_PPS, NAL_IDR} <= {nal_type(u) for u in nal_units(key.data)}
    stamps = [p.pts for p in packets]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    # Closing the generator closed the RTSP session at the camera.
    async with asyncio.timeout(5):
        while (await server.status("cam-a")).clients:
            await asyncio.sleep(0.05)


@needs_server
async def test_failures_are_mapped_to_reasons_without_leaking_credentials(
        server: RtspCameraServer) -> None:
    url = server.urls["cam-a"]
    with capture_logs() as logs:
        no_credentials = await failure(RtspSource(camera(url), FAST))
        wrong_password = await failure(RtspSource(camera(with_credentials(url, password="Wr0ng-pw")), FAST))
        refused = await failure(RtspSource(camera(with_credentials(closed_port_url())), FAST))
        await server.set_fault("cam-a", Fault.REFUSE)
        not_served = await failure(RtspSource(camera(with_credentials(url)), FAST))
        with silent_listener() as hung_url:
            started = time.monotonic()
            hung = await failure(RtspSource(camera(with_credentials(hung_url)), FAST))
            hung_after = time.monotonic() - started
    assert (no_credentials.reason, wrong_password.reason) == ("unauthorized", "unauthorized")
    assert refused.reason == "refused" and "connection refused" in refused.detail
    assert not_served.reason == "refused" and "404" in not_served.detail
    assert hung.reason == "timeout" and hung_after < FAST.open_timeout_seconds + 1.5
    for error in (no_credentials, wrong_password, refused, not_served, hung):
        assert PASSWORD not in str(error) and "Wr0ng-pw" not in str(error)
        assert USER + ":" not in str(error)
    assert PASSWORD not in repr(logs) and "Wr0ng-pw" not in repr(logs)


@needs_server
async def test_stall_is_detected_within_the_stall_time_and_stop_at_once(
        server: RtspCameraServer) -> None:
    source = RtspSource(camera(with_credentials(server.urls["cam-a"])), FAST)
    arrivals: list[float] = []
    stalled_at = 0.0

    async def watch() -> SourceError:
        nonlocal stalled_at
        try:
            async with contextlib.aclosing(source.packets()) as stream:
                async for _packet in stream:
                    arrivals.append(time.monotonic())
                    if len(arrivals) == 5:
                        await server.set_fault("cam-a", Fault.STALL)
                        stalled_at = time.monotonic()
        except SourceError as exc:
            return exc
        raise AssertionError("the stream never failed")

    async with asyncio.timeout(10):
        stalled = await watch()
    # Frames stop at the stall command (give or take one in flight); the verdict follows
    # stall_seconds later, not twice that (FFmpeg's parser holds one frame back).
    verdict_after = time.monotonic() - stalled_at
    assert stalled.reason == "stalled"
    assert FAST.stall_seconds - 0.3 <= verdict_after <= FAST.stall_seconds + 0.6

    await server.set_fault("cam-a", Fault.RESUME)
    arrivals.clear()
    async with asyncio.timeout(10):
        while True:
            try:
                async with contextlib.aclosing(source.packets()) as stream:
                    async for _packet in stream:
                        arrivals.append(time.monotonic())
                        if len(arrivals) == 5:
                            await server.set_fault("cam-a", Fault.STOP)
            except SourceError as exc:
                stopped = exc
                break
    assert stopped.reason == "stalled" and "ended" in stopped.detail
    assert time.monotonic() - arrivals[-1] < 1.0
    assert source.opens == 2


@needs_server
async def test_a_codec_that_cannot_pass_through_needs_transcode() -> None:
    async with serve(codec="h265") as server:
        url = with_credentials(server.urls["cam-a"])
        rejected = await failure(RtspSource(camera(url), FAST))
        assert rejected.reason == "codec" and "hevc" in rejected.detail

        encoders = H264Transcoder.encoders_started
        source = RtspSource(camera(url, transcode=True), FAST)
        packets = await take(source, 12)
        assert (source.codec, H264Transcoder.encoders_started - encoders) == ("hevc", 1)
        first_key = next(p for p in packets if p.keyframe)
        assert {NAL_SPS, NAL_PPS, NAL_IDR} <= {nal_type(u) for u in nal_units(first_key.data)}
        assert not source.transcoding  # only while connected
