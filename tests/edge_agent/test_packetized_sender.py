"""Packetize once, send per viewer: the payload cache, per-viewer RTP streams, batched UDP sends,
and real aiortc viewers of one camera on loopback."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from edge_agent.access_unit import NAL_FU_A, NAL_STAP_A, AccessUnit, packetize
from edge_agent.camera_feed import CameraFeed
from edge_agent.camera_sources.h264 import NAL_IDR, NAL_PPS, NAL_SPS, START_CODE
from edge_agent.camera_sources.synthetic import SyntheticSource
from edge_agent.config import CameraConfig
from edge_agent.packetized_sender import AIORTC_SENDER_STATE, PacketizedRtpSender
from edge_agent.rtp_stream import RtpStream
from edge_agent.udp_batch_sender import UdpBatchSender
from edge_agent.viewer_session import ViewerSession
from runtime.webrtc import WebRtcSettings

SPS = bytes([0x67, 0x42, 0xC0, 0x1F]) + bytes(range(20))
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])


def _idr(size: int) -> bytes:
    return bytes([0x65]) + bytes((i * 7) & 0xFF for i in range(size - 1))


def _depacketize(payloads: tuple[bytes, ...] | list[bytes]) -> list[bytes]:
    """NAL units back from RTP payloads (the receiver's view)."""
    units: list[bytes] = []
    fragment = b""
    for payload in payloads:
        kind = payload[0] & 0x1F
        if kind == NAL_STAP_A:
            pos = 1
            while pos < len(payload):
                length = int.from_bytes(payload[pos:pos + 2], "big")
                units.append(payload[pos + 2:pos + 2 + length])
                pos += 2 + length
        elif kind == NAL_FU_A:
            if payload[1] & 0x80:
                fragment = bytes([(payload[0] & 0xE0) | (payload[1] & 0x1F)])
            fragment += payload[2:]
            if payload[1] & 0x40:
                units.append(fragment)
        else:
            units.append(payload)
    return units


# --- packetizing once ------------------------------------------------------------------------


def test_key_frame_packetizes_to_stap_a_then_equal_fu_a_fragments() -> None:
    idr = _idr(5000)
    payloads = packetize(START_CODE + SPS + START_CODE + PPS + START_CODE + idr, max_payload=1300)
    assert payloads[0][0] & 0x1F == NAL_STAP_A
    fragments = payloads[1:]
    assert all(p[0] & 0x1F == NAL_FU_A for p in fragments)
    assert {len(p) for p in fragments[:-1]} == {1300}  # equal: one segmented send
    assert len(fragments[-1]) <= 1300
    assert _depacketize(payloads) == [SPS, PPS, idr]


def test_small_units_travel_alone_or_together_and_delimiters_and_filler_are_dropped() -> None:
    delta = bytes([0x41, 1, 2, 3])
    filler = b"\x0c" + b"\xff" * 3000
    assert packetize(START_CODE + b"\x09\xf0" + START_CODE + delta + START_CODE + filler) == (delta,)
    kept = packetize(START_CODE + delta + START_CODE + filler, keep_filler=True)
    assert _depacketize(kept) == [delta, filler]
    assert _depacketize(packetize(START_CODE + SPS + START_CODE + PPS)) == [SPS, PPS]


# --- one viewer's stream -----------------------------------------------------------------------


def _unit(timestamp: int = 3000, keyframe: bool = True) -> AccessUnit:
    return AccessUnit.packetized(START_CODE + SPS + START_CODE + PPS + START_CODE + _idr(4000),
                                 timestamp, keyframe)


def test_two_viewers_share_payloads_with_their_own_ssrc_and_sequence_numbers() -> None:
    unit = _unit()
    first = RtpStream(ssrc=0x1111, payload_type=102, sequence_number=100, timestamp_origin=5)
    second = RtpStream(ssrc=0x2222, payload_type=102, sequence_number=65534,
                       timestamp_origin=0xFFFFFFF0)
    a = [RtpPacket.parse(p) for p in first.write(unit)]
    b = [RtpPacket.parse(p) for p in second.write(unit)]
    assert [p.payload for p in a] == [p.payload for p in b] == list(unit.payloads)
    assert {p.ssrc for p in a} == {0x1111} and {p.ssrc for p in b} == {0x2222}
    assert [p.sequence_number for p in a] == list(range(100, 100 + len(a)))
    assert [p.sequence_number for p in b][:3] == [65534, 65535, 0]  # wraps
    assert {p.timestamp for p in a} == {3005} and {p.timestamp for p in b} == {(3000 - 16) % 2**32}
    assert [p.marker for p in a] == [0] * (len(a) - 1) + [1]


def test_nack_is_answered_from_this_viewers_history_as_rtx() -> None:
    unit = _unit()
    first = RtpStream(ssrc=0x1111, payload_type=102, sequence_number=100, timestamp_origin=0,
                      rtx_ssrc=0x1112, rtx_payload_type=103, rtx_sequence_number=7)
    second = RtpStream(ssrc=0x2222, payload_type=102, sequence_number=900, timestamp_origin=0)
    sent = [RtpPacket.parse(p) for p in first.write(unit)]
    second.write(unit)
    assert second.retransmission(101) is None  # not a sequence number the second viewer used
    resent = first.retransmission(101)
    assert resent is not None
    rtx = RtpPacket.parse(resent)
    assert (rtx.ssrc, rtx.payload_type, rtx.sequence_number) == (0x1112, 103, 7)
    assert rtx.payload == (101).to_bytes(2, "big") + sent[1].payload
    assert first.retransmission(99) is None and first.retransmitted == 1


# --- batched sends ---------------------------------------------------------------------------


def test_a_run_of_equal_datagrams_leaves_in_one_call_and_arrives_intact() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(2)
        tx.bind(("127.0.0.1", 0))
        datagrams = [bytes([i]) * 1200 for i in range(20)] + [b"\xee" * 300, b"\xff" * 900]
        sender = UdpBatchSender(tx, rx.getsockname())
        sender.send(datagrams)
        received = [rx.recv(2048) for _ in datagrams]
        sender.close()
        assert received == datagrams
        assert sender.datagrams == len(datagrams)
        if sender.gso:
            assert sender.calls == 2  # 20 x 1200 + the shorter 300 in one; 900 alone
        tx.sendto(b"still open", rx.getsockname())  # closing the duplicate keeps the socket
        assert rx.recv(64) == b"still open"


def test_installed_aiortc_still_has_the_sender_state_we_share() -> None:
    async def check() -> None:
        pc = RTCPeerConnection()
        sender = pc.addTransceiver("video").sender
        missing = [n for n in AIORTC_SENDER_STATE if not hasattr(sender, "_RTCRtpSender__" + n)]
        await pc.close()
        assert not missing, f"aiortc changed; PacketizedRtpSender needs {missing}"
    asyncio.run(check())


# --- real viewers ----------------------------------------------------------------------------


@dataclass
class Viewer:
    """An aiortc viewer that decodes every frame and records the RTP packets it receives."""

    pc: RTCPeerConnection
    packets: list[RtpPacket] = field(default_factory=list)
    frames: int = 0
    got_frames: asyncio.Event = field(default_factory=asyncio.Event)
    wanted: int = 1
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def wait_frames(self, count: int, timeout: float = 10) -> None:
        self.wanted = count
        if self.frames < count:
            self.got_frames.clear()
            async with asyncio.timeout(timeout):
                await self.got_frames.wait()

    async def _receive(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            if self.frames >= self.wanted:
                self.got_frames.set()


@pytest.fixture
async def feed() -> AsyncIterator[CameraFeed]:
    camera = CameraConfig("cam-1", "Camera 1", 37.5, 127.0, "sim:?size=320x240&fps=15&gop=1&kbps=600")
    async with CameraFeed(SyntheticSource(camera, "gangnam"), idle_close_seconds=0.5) as feed:
        yield feed


async def _watch(feed: CameraFeed, sessions: list[ViewerSession], viewers: list[Viewer],
                 send_loss: float = 0.0) -> tuple[ViewerSession, Viewer]:
    webrtc = WebRtcSettings.loopback()

    async def closed(session: ViewerSession, reason: str) -> None:
        return None

    session = ViewerSession(session_id=f"s{len(sessions)}", camera_id=feed.camera_id, feed=feed,
                            webrtc=webrtc, expires_at=datetime.now(UTC) + timedelta(minutes=5),
                            on_closed=closed, send_loss=send_loss)
    sessions.append(session)
    pc = RTCPeerConnection(webrtc.rtc_configuration())
    viewer = Viewer(pc)
    viewers.append(viewer)
    transceiver = pc.addTransceiver("video", direction="recvonly")
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType.lower() in ("video/h264", "video/rtx")]
    transceiver.setCodecPreferences(h264)

    @pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        viewer.tasks.append(asyncio.create_task(viewer._receive(track)))

    await pc.setLocalDescription(await pc.createOffer())
    answer = await session.answer(pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    receiver = transceiver.receiver
    original = receiver._handle_rtp_packet

    async def record(packet: RtpPacket, arrival_time_ms: int) -> None:
        viewer.packets.append(packet)
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = record  # type: ignore[method-assign]
    return session, viewer


@pytest.fixture
async def watching() -> AsyncIterator[tuple[list[ViewerSession], list[Viewer]]]:
    sessions: list[ViewerSession] = []
    viewers: list[Viewer] = []
    yield sessions, viewers
    for session in sessions:
        await session.close("test over")
    for viewer in viewers:
        await viewer.pc.close()
        for task in viewer.tasks:
            task.cancel()
        await asyncio.gather(*viewer.tasks, return_exceptions=True)


def _media(viewer: Viewer) -> list[RtpPacket]:
    ssrcs = {p.ssrc for p in viewer.packets}
    main = min(ssrcs, key=lambda s: next(i for i, p in enumerate(viewer.packets) if p.ssrc == s))
    return [p for p in viewer.packets if p.ssrc == main]


@pytest.mark.media
async def test_two_viewers_receive_identical_payloads_with_their_own_ssrc_and_sequence(
        feed: CameraFeed, watching: tuple[list[ViewerSession], list[Viewer]]) -> None:
    sessions, viewers = watching
    first_session, first = await _watch(feed, sessions, viewers)
    second_session, second = await _watch(feed, sessions, viewers)
    await first.wait_frames(30)
    await second.wait_frames(30)
    a, b = _media(first), _media(second)
    assert a[0].ssrc != b[0].ssrc
    for packets in (a, b):
        sequence = [p.sequence_number for p in packets]
        assert all((y - x) % 65536 == 1 for x, y in itertools.pairwise(sequence))
    payloads_a = [p.payload for p in a]
    start = payloads_a.index(b[0].payload)
    overlap = min(len(a) - start, len(b))
    assert overlap > 40
    assert payloads_a[start:start + overlap] == [p.payload for p in b[:overlap]]
    for session in (first_session, second_session):
        assert isinstance(session.sender, PacketizedRtpSender)
        batch = session.sender.batch_sender
        assert batch is not None and batch.datagrams > 0
        if batch.gso:
            assert batch.calls < batch.datagrams  # runs of fragments share a system call


def _starts_with_key_frame(packet: RtpPacket) -> bool:
    kind = packet.payload[0] & 0x1F
    if kind == NAL_STAP_A:
        kind = packet.payload[3] & 0x1F
    elif kind == NAL_FU_A:
        kind = packet.payload[1] & 0x1F
    return kind in (NAL_SPS, NAL_PPS, NAL_IDR)


@pytest.mark.media
async def test_viewer_joining_mid_stream_starts_at_a_key_frame_at_once(
        feed: CameraFeed, watching: tuple[list[ViewerSession], list[Viewer]]) -> None:
    sessions, viewers = watching
    _, first = await _watch(feed, sessions, viewers)
    await first.wait_frames(22)  # past the first GOP (15 frames), mid-way through the second
    loop = asyncio.get_running_loop()
    joined = loop.time()
    _, late = await _watch(feed, sessions, viewers)
    await late.wait_frames(1, timeout=2)
    assert loop.time() - joined < 1.0  # the GOP cache: no waiting for the camera's key frame
    assert _starts_with_key_frame(_media(late)[0])


@pytest.mark.media
async def test_lossy_viewer_recovers_through_nack_from_its_own_history(
        feed: CameraFeed, watching: tuple[list[ViewerSession], list[Viewer]]) -> None:
    sessions, viewers = watching
    lossy_session, lossy = await _watch(feed, sessions, viewers, send_loss=0.05)
    clean_session, clean = await _watch(feed, sessions, viewers)
    await clean.wait_frames(60, timeout=15)
    await lossy.wait_frames(50, timeout=15)  # decodes on although 5 % of packets were dropped
    assert isinstance(lossy_session.sender, PacketizedRtpSender)
    assert isinstance(clean_session.sender, PacketizedRtpSender)
    lossy_stream, clean_stream = lossy_session.sender.rtp_stream, clean_session.sender.rtp_stream
    assert lossy_stream is not None and clean_stream is not None
    assert lossy_stream.retransmitted > 0
    assert clean_stream.retransmitted == 0
    resent = [p for p in lossy.packets if p.ssrc == lossy_session.sender._rtx_ssrc]
    assert resent, "retransmissions arrive on the lossy viewer's own RTX stream"
    assert not [p for p in clean.packets if p.ssrc == lossy_session.sender._rtx_ssrc]
