"""InterleavedRtspClient against a scripted RTSP camera on loopback: the handshake, Digest auth,
and an access unit handed on at its marked last packet, not when the next one begins."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Self, cast

import pytest

from edge_agent.camera_sources import rtsp_client
from edge_agent.camera_sources.base import EncodedPacket
from edge_agent.camera_sources.h264 import (
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    START_CODE,
    nal_type,
    nal_units,
)
from edge_agent.camera_sources.rtsp import RtspSource, RtspTarget
from edge_agent.camera_sources.rtsp_client import InterleavedRtspClient, SdpVideo
from edge_agent.config import CameraConfig, RtspSettings
from edge_agent.exceptions import SourceError

SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0x8C, 0x8D, 0x40])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65]) + bytes(range(256)) * 12  # 3 KB: three FU-A fragments


def _sdp(codec: str = "H264") -> str:
    sprop = ",".join(base64.b64encode(u).decode() for u in (SPS, PPS))
    return ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\na=control:*\r\n"
            f"m=video 0 RTP/AVP 96\r\na=rtpmap:96 {codec}/90000\r\n"
            f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={sprop}\r\n"
            "a=control:stream=0\r\n")


def _rtp(sequence: int, timestamp: int, payload: bytes, marker: bool) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, sequence, timestamp, 1234)
    packet = header + payload
    return struct.pack("!BBH", 0x24, 0, len(packet)) + packet


def _fu_a(unit: bytes, size: int = 1200) -> list[bytes]:
    body = unit[1:]
    pieces = [body[i:i + size] for i in range(0, len(body), size)]
    return [bytes(((unit[0] & 0xE0) | 28, (0x80 if i == 0 else 0) | (0x40 if i == len(pieces) - 1
                                                                      else 0) | (unit[0] & 0x1F)))
            + piece for i, piece in enumerate(pieces)]


class ScriptedCamera:
    """Answers DESCRIBE / SETUP / PLAY (Digest auth when asked), then sends what the test says."""

    def __init__(self, *, codec: str = "H264", password: str | None = None) -> None:
        self.codec = codec
        self.password = password
        self.methods: list[str] = []
        self.playing = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None
        self._connections: list[tuple[asyncio.Task[None], asyncio.StreamWriter]] = []

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"rtsp://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/cam"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        task = asyncio.current_task()
        assert task is not None
        self._connections.append((task, writer))
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                method = head.split(" ", 1)[0]
                cseq = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                            if line.lower().startswith("cseq"))
                self.methods.append(method)
                if self.password and ("Authorization: Digest" not in head
                                      or self.password == "never-accepted"):
                    writer.write(f"RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\nWWW-Authenticate: "
                                 'Digest realm="cam", nonce="abc"\r\n\r\n'.encode())
                    continue
                extra, body = "", ""
                if method == "DESCRIBE":
                    body = _sdp(self.codec)
                    extra = "Content-Type: application/sdp\r\n"
                elif method == "SETUP":
                    extra = ("Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n"
                             "Session: 12345678;timeout=60\r\n")
                elif method == "PLAY":
                    extra = "Session: 12345678\r\n"
                writer.write(f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n{extra}"
                             f"Content-Length: {len(body)}\r\n\r\n{body}".encode())
                if method == "PLAY":
                    self.playing.set()

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        self.server.close()
        for task, writer in self._connections:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            await task
        await self.server.wait_closed()


@pytest.fixture
async def camera() -> AsyncIterator[ScriptedCamera]:
    async with ScriptedCamera(password="pw") as running:
        yield running


def _client(url: str, stall: float = 2.0) -> InterleavedRtspClient:
    target = RtspTarget.parse(url.replace("rtsp://", "rtsp://user:pw@"))
    return InterleavedRtspClient(target, "cam-a", open_timeout=2.0, stall_seconds=stall)


async def test_an_access_unit_is_handed_on_at_its_marker_not_when_the_next_begins(
        camera: ScriptedCamera) -> None:
    client = _client(camera.url)
    video = await client.open()
    assert (video.codec, video.clock_rate) == ("h264", 90_000)
    assert camera.methods == ["DESCRIBE", "DESCRIBE", "SETUP", "PLAY"]  # the second with Digest
    units = cast(AsyncGenerator[EncodedPacket, None], client.access_units())
    # A delta before any key frame is skipped; then a key frame (IDR only: the SDP's SPS/PPS
    # are put in front), and nothing after it: it must arrive anyway, at once.
    camera.send(_rtp(1, 3000, bytes([0x41, 1, 2, 3]), marker=True))
    for i, fragment in enumerate(fu := _fu_a(IDR)):
        camera.send(_rtp(2 + i, 9000, fragment, marker=i == len(fu) - 1))
    async with asyncio.timeout(0.5):  # far less than the 2 s stall verdict
        unit = await anext(units)
    assert unit.keyframe and unit.pts == 9000
    assert [nal_type(u) for u in nal_units(unit.data)] == [NAL_SPS, NAL_PPS, NAL_IDR]
    assert list(nal_units(unit.data))[2] == IDR
    camera.send(_rtp(5, 15000, bytes([0x41, 9]), marker=True))
    async with asyncio.timeout(0.5):
        delta = await anext(units)
    assert (delta.keyframe, delta.data) == (False, START_CODE + bytes([0x41, 9]))
    await units.aclose()
    await client.close()


async def test_silence_is_a_stall_and_a_hang_up_ends_the_stream(camera: ScriptedCamera) -> None:
    client = _client(camera.url, stall=0.3)
    await client.open()
    with pytest.raises(SourceError) as stalled:
        async with asyncio.timeout(2):
            await anext(client.access_units())
    assert stalled.value.reason == "stalled" and "no packet" in stalled.value.detail
    await client.close()

    client = _client(camera.url)
    await client.open()
    assert camera.writer is not None
    camera.writer.close()
    with pytest.raises(SourceError) as ended:
        async with asyncio.timeout(2):
            await anext(client.access_units())
    assert ended.value.reason == "stalled" and "ended" in ended.value.detail
    await client.close()


async def test_wrong_credentials_and_other_codecs_are_refused_with_reasons() -> None:
    async with ScriptedCamera(password="pw") as camera:
        wrong = InterleavedRtspClient(RtspTarget.parse(camera.url.replace("rtsp://", "rtsp://u:x@")),
                                      "cam-a", open_timeout=2.0, stall_seconds=2.0)
        camera.password = "never-accepted"
        with pytest.raises(SourceError) as refused:
            await wrong.open()
        assert refused.value.reason == "unauthorized" and "x@" not in str(refused.value)
    async with ScriptedCamera(codec="H265") as camera:
        source = RtspSource(CameraConfig("cam-a", "A", 37.5, 127.0, camera.url),
                            RtspSettings(open_timeout_seconds=2.0, stall_seconds=2.0))
        with pytest.raises(SourceError) as codec:
            await anext(source.packets())
        assert codec.value.reason == "codec" and "hevc" in codec.value.detail


def test_sdp_control_urls_resolve_against_the_base() -> None:
    video = SdpVideo.parse(_sdp(), "rtsp://cam/live/")
    assert video.control == "rtsp://cam/live/stream=0"
    assert video.parameter_sets == START_CODE + SPS + START_CODE + PPS


async def test_a_unit_assembled_across_buffer_compactions_and_responses_is_whole(
        camera: ScriptedCamera, monkeypatch: pytest.MonkeyPatch) -> None:
    # A small receive buffer: the key frame's parts are views of it until the buffer is
    # compacted under them, then copies; a keep-alive's answer arrives between its packets.
    monkeypatch.setattr(rtsp_client, "READ_BYTES", 2048)
    monkeypatch.setattr(rtsp_client, "BUFFER_BYTES", 8192)
    client = _client(camera.url)
    await client.open()
    units = cast(AsyncGenerator[EncodedPacket, None], client.access_units())
    big = bytes([0x65]) + bytes(range(256)) * 160  # 40 KB: five times the buffer
    fragments = _fu_a(big, 1000)
    for i, fragment in enumerate(fragments):
        camera.send(_rtp(1 + i, 9000, fragment, marker=i == len(fragments) - 1))
        if i == 3:
            camera.send(b"RTSP/1.0 200 OK\r\nCSeq: 9\r\nContent-Length: 2\r\n\r\nok")
        if i % 4 == 0:
            await asyncio.sleep(0.005)  # separate receives
    async with asyncio.timeout(2):
        unit = await anext(units)
    assert unit.keyframe and list(nal_units(unit.data))[2] == big
    await units.aclose()
    await client.close()


async def test_deliver_hands_units_on_from_the_read_callback_without_a_task(
        camera: ScriptedCamera) -> None:
    # The feed's path: on_live once before the first unit, then every unit from the protocol's
    # read callback (no task is running there), in order; a sink that raises ends the session.
    client = _client(camera.url)
    await client.open()
    taken: list[tuple[int, bool]] = []
    events: list[str] = []

    async def live() -> None:
        events.append("live")

    def sink(unit: EncodedPacket) -> None:
        events.append("unit")
        taken.append((unit.pts, asyncio.current_task() is None))
        if unit.pts == 21000:
            raise RuntimeError("the sink broke")

    for i, fragment in enumerate(fu := _fu_a(IDR)):
        camera.send(_rtp(1 + i, 9000, fragment, marker=i == len(fu) - 1))
    camera.send(_rtp(4, 15000, bytes([0x41, 9]), marker=True))
    delivering = asyncio.create_task(client.deliver(sink, live))
    async with asyncio.timeout(2):
        while len(taken) < 2:
            await asyncio.sleep(0.01)
    camera.send(_rtp(5, 21000, bytes([0x41, 10]), marker=True))
    camera.send(_rtp(6, 27000, bytes([0x41, 11]), marker=True))
    with pytest.raises(RuntimeError, match="the sink broke"):
        async with asyncio.timeout(2):
            await delivering
    assert events[:2] == ["live", "unit"]
    assert [pts for pts, _ in taken] == [9000, 15000, 21000]  # nothing after the failure
    assert all(outside for _, outside in taken[2:])  # the live stream: from the read callback
    await client.close()
