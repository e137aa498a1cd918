"""An RTSP client for H.264 over RTP interleaved in the RTSP connection (TCP), on the event loop.

FFmpeg's RTSP demuxer (``rtsp.py``'s reader thread) costs a thread wake-up and a hand-over per
access unit, and its H.264 parser holds each access unit until the next one begins (up to 67 ms
at 15 fps). For the common case, a camera sending H.264 over TCP, this client does the job on the
loop instead: ``DESCRIBE`` (Digest or Basic auth, as ``camera_probe`` does), ``SETUP`` with
``interleaved=0-1``, ``PLAY``, then each receive depacketized where the kernel wrote it, in the
loop's read callback (an ``asyncio.BufferedProtocol``: no copy into a stream buffer, no task
wake-up per receive); an access unit is joined once and handed on the moment its last packet (the
RTP marker bit) arrives: by ``deliver()`` to the feed's callback, right there in the read callback
(no task wakes for a unit), or through ``access_units()`` to a task that iterates. Anything else
(UDP, RTSPS, another codec, transcoding) stays with FFmpeg; ``open()`` raises ``NotCarried`` for
a camera that is not H.264.

Failures raise ``SourceError`` with the same reasons and details as the FFmpeg path.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import errno
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING
from urllib.parse import unquote

import structlog

from edge_agent.camera_sources.base import CLOCK_RATE, TIME_BASE, EncodedPacket, PacketSink
from edge_agent.camera_sources.h264 import NAL_IDR, START_CODE, ParameterSets
from edge_agent.exceptions import SourceError

if TYPE_CHECKING:
    from edge_agent.camera_probe import RtspResponse
    from edge_agent.camera_sources.rtsp import RtspTarget

log = structlog.get_logger(__name__)

__all__ = ["InterleavedRtspClient", "NotCarried", "SdpVideo"]

USER_AGENT = "SafetyNet-Agent"
READ_BYTES = 256 * 1024  # the most one receive takes
#: The receive buffer, allocated once: packets are depacketized where the kernel wrote them.
BUFFER_BYTES = 4 * READ_BYTES
#: Access units depacketized and not yet taken; reading pauses at this many (see queue_unit).
QUEUE_UNITS = 64
KEEPALIVE_DEFAULT_SECONDS = 60.0
NAL_FILLER = 12
NAL_STAP_A = 24
NAL_FU_A = 28


class NotCarried(Exception):
    """The camera's video is not H.264 (the codec, as FFmpeg names it, is the message)."""


@dataclass(frozen=True)
class SdpVideo:
    """What this client needs from the SDP's first video stream."""

    codec: str
    control: str
    clock_rate: int
    parameter_sets: bytes  # Annex B SPS/PPS from sprop-parameter-sets, or b""

    @classmethod
    def parse(cls, sdp: str, base: str) -> SdpVideo:
        from edge_agent.camera_probe import video_codec  # camera_probe imports rtsp.py

        codec = video_codec(sdp)
        in_video, payload, control, rate, sprop = False, "", "", 90_000, b""
        for line in sdp.splitlines():
            line = line.strip()
            if line.startswith("m="):
                if in_video:
                    break
                in_video = line.startswith("m=video")
                payload = line.split()[3] if in_video and len(line.split()) > 3 else ""
            elif not in_video:
                continue
            elif line.startswith("a=control:"):
                control = line[len("a=control:"):]
            elif line.startswith(f"a=rtpmap:{payload} "):
                parts = line.split(" ", 1)[1].split("/")
                rate = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else rate
            elif line.startswith(f"a=fmtp:{payload} ") and "sprop-parameter-sets=" in line:
                value = line.split("sprop-parameter-sets=", 1)[1].split(";", 1)[0].strip()
                for unit in value.split(","):
                    try:
                        sprop += START_CODE + base64.b64decode(unit + "=" * (-len(unit) % 4))
                    except ValueError:
                        continue
        if not control or control == "*":
            control = base
        elif not control.startswith(("rtsp://", "rtsps://")):
            control = base.rstrip("/") + "/" + control
        return cls(codec, control, rate, sprop)


class InterleavedRtspClient:
    """One RTSP session; ``open()`` then iterate ``access_units()``; ``close()`` always."""

    def __init__(self, target: RtspTarget, camera_id: str, *, open_timeout: float,
                 stall_seconds: float, keep_filler: bool = False) -> None:
        """``keep_filler``: pass filler data (NAL type 12) on; it is dropped on arrival otherwise,
        before it is copied (a constant-bit-rate camera can pad most of each frame with it)."""
        self.keep_filler = keep_filler
        self.target = target
        self.camera_id = camera_id
        self.open_timeout = open_timeout
        self.stall_seconds = stall_seconds
        self._connection: _Connection | None = None
        self._cseq = 0
        self._challenge: list[str] = []
        self._session = ""
        self._keepalive = KEEPALIVE_DEFAULT_SECONDS
        self._channel = 0
        self.video: SdpVideo | None = None
        self.open_seconds = 0.0

    def _error(self, reason: str, detail: str) -> SourceError:
        return SourceError(self.camera_id, reason, self.target.redact(detail))

    # --- the handshake --------------------------------------------------------------------

    async def open(self) -> SdpVideo:
        if self.target.transport != "tcp" or self.target.secure:
            raise ValueError("only RTSP over TCP, unencrypted, is read here")
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.open_timeout):
                video = await self._handshake()
        except TimeoutError as exc:
            await self.close()
            raise self._error("timeout", f"no answer within {self.open_timeout:g} s") from exc
        except BaseException:
            await self.close()
            raise
        self.open_seconds = time.monotonic() - started
        return video

    async def _handshake(self) -> SdpVideo:
        loop = asyncio.get_running_loop()
        try:
            _, self._connection = await loop.create_connection(
                lambda: _Connection(loop), self.target.host, self.target.port)
        except ConnectionRefusedError as exc:
            raise self._error("refused", "connection refused") from exc
        except OSError as exc:
            unreachable = exc.errno in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH)
            raise self._error("timeout" if unreachable else "refused",
                              f"cannot connect: {exc.strerror or exc}") from exc
        described = await self._request("DESCRIBE", self.target.url, ["Accept: application/sdp"])
        base = next(iter(described.header("Content-Base")), "") or self.target.url
        video = SdpVideo.parse(described.body.decode("utf-8", "replace"), base)
        if video.codec != "h264":
            raise NotCarried(video.codec)
        setup = await self._request("SETUP", video.control,
                                    ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1"])
        session = next(iter(setup.header("Session")), "")
        self._session = session.split(";", 1)[0].strip()
        if "timeout=" in session:
            value = session.split("timeout=", 1)[1].split(";", 1)[0]
            self._keepalive = float(value) if value.strip().isdigit() else self._keepalive
        transport = next(iter(setup.header("Transport")), "")
        if "interleaved=" in transport:
            first = transport.split("interleaved=", 1)[1].split("-", 1)[0].split(";", 1)[0]
            self._channel = int(first) if first.isdigit() else 0
        await self._request("PLAY", base, ["Range: npt=0.000-"])
        self.video = video
        assert self._connection is not None
        # From here on the connection depacketizes what arrives, whether or not anyone iterates
        # access_units() yet (what waits is bounded: see _Connection.queue_unit).
        self._connection.start_media(
            _Depacketizer(video, self._channel, self.keep_filler, self._connection.queue_unit,
                          self._error),
            self._error, stall_seconds=self.stall_seconds, keepalive_seconds=self._keepalive / 2,
            keepalive=lambda: self._send("GET_PARAMETER", self.target.url, []))
        return video

    def _send(self, method: str, uri: str, headers: list[str]) -> None:
        assert self._connection is not None and self._connection.transport is not None
        self._cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self._cseq}", f"User-Agent: {USER_AGENT}",
                 *headers]
        if self._session:
            lines.append(f"Session: {self._session}")
        if self._challenge:
            lines.append(f"Authorization: {self._authorization(method, uri)}")
        self._connection.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def _request(self, method: str, uri: str, headers: list[str]) -> RtspResponse:
        from edge_agent.camera_probe import ProbeFailed  # see SdpVideo.parse

        assert self._connection is not None
        for attempt in (1, 2):
            self._send(method, uri, headers)
            try:
                response = await self._connection.response()
            except ProbeFailed as exc:
                raise self._error(exc.reason, exc.detail) from exc
            except ConnectionError as exc:
                raise self._error("refused", "the camera closed the connection") from exc
            if response.status == 401 and attempt == 1 and not self._challenge:
                if not self.target.username:
                    break
                self._challenge = response.header("WWW-Authenticate")
                continue
            break
        if response.status in (401, 403):
            raise self._error("unauthorized", "the camera rejected the credentials "
                                              f"({response.status} {response.phrase})")
        if response.status != 200:
            raise self._error("refused", f"the camera refused the stream "
                                         f"({response.status} {response.phrase})")
        return response

    def _authorization(self, method: str, uri: str) -> str:
        from edge_agent.camera_probe import ProbeFailed, digest_authorization

        user, password = unquote(self.target.username), unquote(self.target.password)
        digest = next((c for c in self._challenge if c.lower().startswith("digest")), None)
        if digest is not None:
            try:
                return digest_authorization(digest, user, password, method, uri)
            except ProbeFailed as exc:
                raise self._error(exc.reason, exc.detail) from exc
        if any(c.lower().startswith("basic") for c in self._challenge):
            return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        raise self._error("unauthorized", "the camera asks for an authentication scheme we lack")

    # --- media ----------------------------------------------------------------------------

    async def access_units(self) -> AsyncIterator[EncodedPacket]:
        """Annex B access units, each as soon as its marked last packet arrives."""
        connection = self._connection
        assert connection is not None and connection.depacketizer is not None
        units = connection.units
        while True:
            while units:
                unit = units.popleft()
                if connection.paused and len(units) <= QUEUE_UNITS // 2:
                    connection.resume()
                yield unit
            if connection.error is not None:
                raise connection.error
            await connection.wait()

    async def deliver(self, sink: PacketSink, on_live: Callable[[], Awaitable[None]]) -> None:
        """Hand every access unit to ``sink`` until the stream fails (raises its error).

        The first unit is waited for on the calling task, which then awaits ``on_live``; after
        it the read callback calls ``sink`` where a unit's marked last packet was parsed, so a
        unit wakes no task (the calling task wakes only when the stream fails).
        """
        connection = self._connection
        assert connection is not None and connection.depacketizer is not None
        while not connection.units:
            if connection.error is not None:
                raise connection.error
            await connection.wait()
        await on_live()
        connection.deliver_to(sink)
        while connection.error is None:
            await connection.wait()
        raise connection.error

    async def close(self) -> None:
        """TEARDOWN (best effort) and close the connection; idempotent."""
        connection = self._connection
        if connection is None or connection.transport is None:
            self._connection = None
            return
        connection.stop_timers()
        transport = connection.transport
        if self._session and not transport.is_closing():
            try:
                self._send("TEARDOWN", self.target.url, [])
            except (ConnectionError, RuntimeError):
                log.debug("no teardown: the camera is gone", camera=self.camera_id)
        self._connection = None
        transport.close()
        await connection.lost


class _Connection(asyncio.BufferedProtocol):
    """The RTSP connection: one fixed receive buffer that the kernel writes into.

    During the handshake ``response()`` reads RTSP responses from it; then each receive is
    depacketized where it landed, in the loop's read callback. A complete access unit goes to
    the sink given to ``deliver_to()`` there and then; before that (or without one) it is queued
    and wakes the task that iterates ``access_units()``. Parts of the access unit being
    assembled are views of the buffer until its marked last packet joins them into one ``bytes``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buffer = bytearray(BUFFER_BYTES)
        self._view = memoryview(self._buffer)
        self._start = 0  # the first byte not yet parsed
        self._fill = 0   # the end of what was received
        self.transport: asyncio.Transport | None = None
        self.depacketizer: _Depacketizer | None = None
        self.units: collections.deque[EncodedPacket] = collections.deque()
        self._sink: PacketSink | None = None  # set: units go there, not to ``units``
        self.paused = False
        #: Why the session ended: a SourceError, or what the sink raised.
        self.error: Exception | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._stall_seconds = 0.0
        self._last_media = 0.0
        self._stall_timer: asyncio.TimerHandle | None = None
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._keepalive_seconds = KEEPALIVE_DEFAULT_SECONDS
        self._keepalive: Callable[[], None] = _nothing
        self._error: Callable[[str, str], SourceError] | None = None  # set once media flows

    # --- asyncio's side ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        if BUFFER_BYTES - self._fill < READ_BYTES:
            self._compact()
        return self._view[self._fill:]

    def buffer_updated(self, nbytes: int) -> None:
        self._fill += nbytes
        depacketizer = self.depacketizer
        if depacketizer is None:
            self._wake()  # a response for the handshake, perhaps
            return
        if self.error is not None:
            self._start = self._fill  # the session is over: nothing more is read
            return
        try:
            self._start, had_media = depacketizer.parse(self._buffer, self._view, self._start,
                                                        self._fill)
        except SourceError as exc:
            self._fail(exc)
            return
        if had_media:
            self._last_media = self._loop.time()

    def eof_received(self) -> bool | None:
        return None  # close: a camera does not half-close an RTSP session

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.stop_timers()
        if self._error is not None:
            self._fail(self._error("stalled", "the camera ended the stream"))
        self._wake()
        if not self.lost.done():
            self.lost.set_result(None)

    # --- the handshake ----------------------------------------------------------------------

    async def response(self) -> RtspResponse:
        """The next RTSP response; ``ConnectionResetError`` if the camera hung up first."""
        from edge_agent.camera_probe import parse_response  # see SdpVideo.parse

        while True:
            parsed = parse_response(self._buffer[self._start:self._fill])
            if parsed is not None:
                response, used = parsed
                self._start += used
                return response
            if self._eof:
                raise ConnectionResetError("the camera closed the connection")
            await self.wait()

    # --- media ------------------------------------------------------------------------------

    def start_media(self, depacketizer: _Depacketizer, error: Callable[[str, str], SourceError],
                    *, stall_seconds: float, keepalive_seconds: float,
                    keepalive: Callable[[], None]) -> None:
        """Depacketize from now on (what followed PLAY's response first); watch for stalls."""
        self.depacketizer, self._error = depacketizer, error
        self._stall_seconds = stall_seconds
        self._keepalive_seconds, self._keepalive = keepalive_seconds, keepalive
        self._last_media = self._loop.time()  # RTCP alone does not count
        if self._fill > self._start:
            self.buffer_updated(0)
        if self._eof:
            self._fail(error("stalled", "the camera ended the stream"))
            return
        self._stall_timer = self._loop.call_at(self._last_media + stall_seconds, self._check_stall)
        self._keepalive_timer = self._loop.call_later(keepalive_seconds, self._send_keepalive)

    def deliver_to(self, sink: PacketSink) -> None:
        """From now on hand each unit to ``sink`` as it completes; first what waits, in order."""
        while self.units and self.error is None:
            self._take(sink, self.units.popleft())
        self._sink = sink
        if self.paused:
            self.resume()

    def queue_unit(self, unit: EncodedPacket) -> None:
        """A complete unit: to the sink, or queued for ``access_units()`` (bounded, see below)."""
        sink = self._sink
        if sink is not None:
            self._take(sink, unit)
            return
        self.units.append(unit)
        if len(self.units) >= QUEUE_UNITS and not self.paused and self.transport is not None:
            # Overflow policy: the loop's consumer is behind; stop reading (TCP pushes back on
            # the camera) until it has taken half, as a blocked read did before.
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def _take(self, sink: PacketSink, unit: EncodedPacket) -> None:
        if self.error is not None:
            return  # the session is over: what follows its failure is not handed on
        try:
            sink(unit)
        except Exception as exc:  # noqa: BLE001 - ends the session; deliver() raises it
            self._fail(exc)

    def resume(self) -> None:
        self.paused = False
        self._last_media = self._loop.time()  # the wait was ours, not the camera's
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    async def wait(self) -> None:
        """Until the next receive, complete access unit, failure or hang-up."""
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def stop_timers(self) -> None:
        for timer in (self._stall_timer, self._keepalive_timer):
            if timer is not None:
                timer.cancel()
        self._stall_timer = self._keepalive_timer = None

    def _check_stall(self) -> None:
        now = self._loop.time()
        if self.paused:
            self._last_media = now
        deadline = self._last_media + self._stall_seconds
        if now >= deadline and self._error is not None:
            self._stall_timer = None
            self._fail(self._error("stalled", f"no packet for {self._stall_seconds:g} s"))
            return
        self._stall_timer = self._loop.call_at(deadline, self._check_stall)

    def _send_keepalive(self) -> None:
        self._keepalive_timer = self._loop.call_later(self._keepalive_seconds,
                                                      self._send_keepalive)
        if self.transport is not None and not self.transport.is_closing():
            self._keepalive()

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
            self.stop_timers()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _compact(self) -> None:
        """Move what is not parsed yet to the front of the buffer, to receive behind it."""
        if self.depacketizer is not None:
            self.depacketizer.detach()  # its views of the buffer become bytes of their own
        kept = self._fill - self._start
        if kept > BUFFER_BYTES - READ_BYTES:  # no interleaved packet or response is this long
            if self._error is not None:
                self._fail(self._error("stalled", "the camera's stream is unreadable"))
            kept = 0
        else:
            self._view[:kept] = self._view[self._start:self._fill]
        self._start, self._fill = 0, kept


def _nothing() -> None:
    return None


class _Depacketizer:
    """RTP (RFC 6184: single NAL unit, STAP-A, FU-A) to Annex B access units, in place."""

    def __init__(self, video: SdpVideo, channel: int, keep_filler: bool,
                 deliver: Callable[[EncodedPacket], None],
                 error: Callable[[str, str], SourceError]) -> None:
        self._deliver = deliver
        self._error = error
        self._dropped = frozenset() if keep_filler else frozenset({NAL_FILLER})
        self._parameter_sets = ParameterSets(video.parameter_sets or None)
        self._time_base = (TIME_BASE if video.clock_rate == CLOCK_RATE
                           else Fraction(1, video.clock_rate))
        self._rtp, self._rtcp = channel, channel + 1
        self.parts: list[bytes | memoryview] = []
        self._keyframe = self._broken = False
        self._skipping = True  # until the first key frame: nothing before it decodes
        self._expected: int | None = None
        self._unit_timestamp: int | None = None
        self._wraps = 0
        self._last_timestamp: int | None = None

    def detach(self) -> None:
        """Copy the parts of the unit being assembled out of the receive buffer."""
        self.parts = [bytes(part) for part in self.parts]

    def parse(self, data: bytearray, view: memoryview, pos: int,
              size: int) -> tuple[int, bool]:
        """Every whole interleaved packet in ``data[pos:size]``: (where parsing stopped, whether
        any RTP packet was among them)."""
        dropped, parts = self._dropped, self.parts
        keyframe, broken, skipping = self._keyframe, self._broken, self._skipping
        expected, unit_timestamp = self._expected, self._unit_timestamp
        rtp, rtcp = self._rtp, self._rtcp
        had_media = False
        try:
            while size - pos >= 4:
                if data[pos] != 0x24:  # an RTSP response (to a keep-alive) between packets
                    end = data.find(b"\r\n\r\n", pos, size)
                    if end == -1:
                        break
                    head = data[pos:end].lower()
                    length = 0
                    if b"content-length:" in head:
                        digits = head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]
                        length = int(digits.strip() or 0)
                    if size < end + 4 + length:
                        break
                    pos = end + 4 + length
                    continue
                channel = data[pos + 1]
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
                if size - start < length:
                    break
                pos = start + length
                if channel == rtcp:
                    if _is_bye(data, start, pos):
                        raise self._error("stalled", "the camera ended the stream")
                    continue
                if channel != rtp or length < 12:
                    continue
                had_media = True
                # RTP header: sequence number, timestamp, marker; skip CSRCs and extension.
                first = data[start]
                marker = data[start + 1] & 0x80
                sequence = (data[start + 2] << 8) | data[start + 3]
                timestamp = ((data[start + 4] << 24) | (data[start + 5] << 16)
                             | (data[start + 6] << 8) | data[start + 7])
                offset = start + 12 + 4 * (first & 0x0F)
                if first & 0x10 and offset + 4 <= pos:
                    offset += 4 + 4 * ((data[offset + 2] << 8) | data[offset + 3])
                end = pos - (data[pos - 1] if first & 0x20 else 0)
                if offset >= end:
                    continue
                if expected is not None and sequence != expected:
                    broken = True  # a packet went missing: this unit cannot decode
                expected = (sequence + 1) & 0xFFFF
                if unit_timestamp is not None and timestamp != unit_timestamp and parts:
                    parts.clear()  # no marker on the last unit
                    keyframe, broken = False, True
                unit_timestamp = timestamp
                kind = data[offset] & 0x1F
                if kind in dropped:
                    pass
                elif kind < NAL_STAP_A:
                    parts += (START_CODE, view[offset:end])
                    keyframe = keyframe or kind == NAL_IDR
                elif kind == NAL_STAP_A:
                    inner = offset + 1
                    while inner + 2 < end:
                        length = (data[inner] << 8) | data[inner + 1]
                        inner += 2
                        if length == 0 or inner + length > end:
                            break
                        if data[inner] & 0x1F not in dropped:
                            keyframe = keyframe or data[inner] & 0x1F == NAL_IDR
                            parts += (START_CODE, view[inner:inner + length])
                        inner += length
                elif kind == NAL_FU_A and end - offset > 2 and data[offset + 1] & 0x1F not in dropped:
                    header = data[offset + 1]
                    if header & 0x80:
                        nal = (data[offset] & 0xE0) | (header & 0x1F)
                        parts += (START_CODE, _NAL_HEADERS[nal])
                        keyframe = keyframe or header & 0x1F == NAL_IDR
                    parts.append(view[offset + 2:end])
                if not marker:
                    continue
                # The access unit is complete: hand it on now, not when the next one starts.
                unit = b"".join(parts)
                parts.clear()
                unit_keyframe, keyframe = keyframe, False
                if broken or (skipping and not unit_keyframe):
                    broken = False
                    skipping = True
                    continue
                skipping = False
                self._deliver(self._unit(unit, timestamp, unit_keyframe))
        finally:
            self._keyframe, self._broken, self._skipping = keyframe, broken, skipping
            self._expected, self._unit_timestamp = expected, unit_timestamp
        return pos, had_media

    def _unit(self, unit: bytes, timestamp: int, keyframe: bool) -> EncodedPacket:
        last = self._last_timestamp
        if last is not None and timestamp < (last & 0xFFFFFFFF) \
                and (last & 0xFFFFFFFF) - timestamp > 1 << 31:
            self._wraps += 1
        unwrapped = timestamp + (self._wraps << 32)
        self._last_timestamp = unwrapped
        return EncodedPacket(self._parameter_sets.complete(unit, keyframe), unwrapped,
                             self._time_base, keyframe)


#: The one-byte NAL header an FU-A's first fragment stands for, by value: no bytes per unit.
_NAL_HEADERS = tuple(bytes((value,)) for value in range(256))


def _is_bye(data: bytes | bytearray, start: int, end: int) -> bool:
    """Whether the compound RTCP packet ``data[start:end]`` holds a BYE (payload type 203)."""
    pos = start
    while pos + 4 <= end:
        if data[pos + 1] == 203:
            return True
        pos += 4 * (((data[pos + 2] << 8) | data[pos + 3]) + 1)
    return False
