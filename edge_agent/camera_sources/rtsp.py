"""``rtsp://`` sources: a real camera's H.264, passed through as is.

H.264 over TCP (the default transport) is read on the event loop by ``InterleavedRtspClient``
(``rtsp_client.py``): no thread, no parser holding a frame back. Everything else (RTP over UDP,
RTSPS, cameras the inventory allows to transcode) is demuxed by FFmpeg (PyAV), as follows.

Each call of ``RtspSource.packets()`` is one RTSP session, run on a thread of its own: FFmpeg's
open (TCP connect, DESCRIBE, SETUP, PLAY, stream probing) blocks for 0.3-2 s and each read blocks
until the camera sends, so neither may run on the event loop. The thread hands access units to the
loop through a bounded queue (overflow: drop what is queued and resume at the next key frame,
logged). Access units are Annex B with SPS/PPS in band before every key frame, taken from the
stream's extradata (the SDP's ``sprop-parameter-sets``) when the camera sends them only there.

Failures end the session with ``SourceError(camera_id, reason, detail)``:

    refused        connection refused, or the camera refuses the stream (404, 454, 5xx)
    unauthorized   401/403: missing or wrong credentials
    timeout        no answer within ``open_timeout`` (connect, DESCRIBE, SETUP, PLAY, probing)
    stalled        no packet for ``stall_seconds``, or the camera ended the stream
    codec          no video, or not H.264 and the inventory entry does not allow ``transcode``

Credentials stay in the URL handed to FFmpeg and nowhere else: the ``RtspTarget`` that logs,
exceptions, status details and reprs see has them split off, and FFmpeg's own messages (which
quote the URL) are redacted before they are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import av.error
import structlog

from edge_agent.camera_sources.base import CameraSource, EncodedPacket, PacketSink
from edge_agent.camera_sources.h264 import ParameterSets
from edge_agent.camera_sources.rtsp_client import InterleavedRtspClient, NotCarried
from edge_agent.camera_sources.transcoder import CLOCK, H264Transcoder
from edge_agent.config import CameraConfig, RtspSettings
from edge_agent.exceptions import SourceError

log = structlog.get_logger(__name__)

#: Codecs a WebRTC viewer takes as the camera sends them.
PASSTHROUGH_CODECS = frozenset({"h264"})
#: Packets between the reader thread and the loop: ~17 s at 15 fps, far more than a busy loop lags.
QUEUE_PACKETS = 256
#: Probe as little as possible: the SDP already says what the stream is (RECIPES: ~1.9 s -> 0.26 s).
PROBE_OPTIONS = {"analyzeduration": "100000", "probesize": "32768"}
BUSY_RETRY_SECONDS = 0.5  # wait before asking again a camera that answered 5xx

_USERINFO = re.compile(r"(?i)\b(rtsps?://)[^/@\s'\"]*@")


def redact_url(text: str) -> str:
    """``text`` with the ``user:pass@`` of every RTSP URL in it replaced by ``***@``."""
    return _USERINFO.sub(r"\1***@", text)


@dataclass(frozen=True)
class RtspTarget:
    """Where an RTSP camera is, split so that credentials never travel with the address.

    ``url`` has no user info and is what logs, errors and status may show; ``authenticated_url``
    is for the RTSP client alone. Credentials are kept exactly as written in the inventory
    (percent-encoded where needed).
    """

    url: str
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)
    transport: str = "tcp"

    @classmethod
    def parse(cls, source: str, transport: str = "tcp") -> RtspTarget:
        parts = urlsplit(source)
        if parts.scheme not in ("rtsp", "rtsps") or not parts.hostname:
            raise ValueError(f"not an rtsp:// URL: {redact_url(source)!r}")
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be tcp or udp, got {transport!r}")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        netloc = f"{host}:{parts.port}" if parts.port is not None else host
        return cls(
            url=urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")),
            username=parts.username or "", password=parts.password or "", transport=transport,
        )

    @property
    def secure(self) -> bool:
        return self.url.startswith("rtsps://")

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (322 if self.secure else 554)

    @property
    def authenticated_url(self) -> str:
        if not self.username:
            return self.url
        scheme, rest = self.url.split("://", 1)
        secret = f":{self.password}" if self.password else ""
        return f"{scheme}://{self.username}{secret}@{rest}"

    def redact(self, text: str) -> str:
        """``text`` without this camera's credentials, however they were quoted."""
        text = redact_url(text)
        for secret in {self.password, self.authenticated_url} - {"", self.url}:
            text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class StreamInfo:
    """What one RTSP session turned out to carry."""

    codec: str
    transcoding: bool
    width: int
    height: int
    open_seconds: float


class RtspSource(CameraSource):
    """A real camera over RTSP; see the module docstring."""

    kind = "rtsp"

    def __init__(self, camera: CameraConfig, settings: RtspSettings | None = None) -> None:
        settings = settings or RtspSettings()
        self.camera_id = camera.camera_id
        self.target = RtspTarget.parse(camera.source, camera.transport)
        self.transcode_allowed = camera.transcode
        self.open_timeout = settings.open_timeout_seconds
        self.stall_seconds = settings.stall_seconds
        self.opens = 0
        #: The codec of the current or last session (None before the first) and whether the
        #: agent re-encodes it: what status reports.
        self.codec: str | None = None
        self.transcoding = False
        self._log = log.bind(camera=self.camera_id, url=self.target.url)

    def __repr__(self) -> str:
        return f"RtspSource({self.camera_id!r}, {self.target.url!r}, transport={self.target.transport!r})"

    #: Off only to measure FFmpeg's reader against ours (bench/media_path.py --ffmpeg-pull).
    own_client = True
    #: On only to compare with servers that forward filler data (bench/agent_process.py).
    keep_filler = False

    @property
    def _read_interleaved(self) -> bool:
        """Whether ``InterleavedRtspClient`` reads this camera (not FFmpeg)."""
        return (self.own_client and self.target.transport == "tcp" and not self.target.secure
                and not self.transcode_allowed)

    async def deliver(self, sink: PacketSink, on_live: Callable[[], Awaitable[None]]) -> None:
        """As ``packets()``; units read by our client go to ``sink`` from its read callback."""
        if not self._read_interleaved:
            await super().deliver(sink, on_live)
            return
        self.opens += 1
        async with self._interleaved_client() as client:
            await client.deliver(sink, on_live)

    async def packets(self) -> AsyncGenerator[EncodedPacket, None]:
        self.opens += 1
        if self._read_interleaved:
            async with self._interleaved_client() as client:
                async for packet in client.access_units():
                    yield packet
            return
        session = _RtspSession(self, asyncio.get_running_loop())
        session.start()
        try:
            info = await session.wait_open()
            self.codec, self.transcoding = info.codec, info.transcoding
            self._log.info("camera connected", codec=info.codec, transcoding=info.transcoding,
                           size=f"{info.width}x{info.height}", transport=self.target.transport,
                           open_ms=round(info.open_seconds * 1000))
            while True:
                yield await session.next_packet()
        finally:
            self.transcoding = False
            await session.stop()


    @contextlib.asynccontextmanager
    async def _interleaved_client(self) -> AsyncIterator[InterleavedRtspClient]:
        """Our client's session with the camera, open (PLAY answered) until the block ends."""
        client = InterleavedRtspClient(self.target, self.camera_id,
                                       open_timeout=self.open_timeout,
                                       stall_seconds=self.stall_seconds,
                                       keep_filler=self.keep_filler)
        try:
            await client.open()
        except NotCarried as exc:
            self.codec = str(exc)
            raise SourceError(self.camera_id, "codec", f"the camera sends {exc}; only H.264 "
                              "passes through (transcode = true in the inventory allows "
                              "re-encoding)") from exc
        try:
            self.codec, self.transcoding = "h264", False
            self._log.info("camera connected", codec="h264", transcoding=False, transport="tcp",
                           reader="interleaved", open_ms=round(client.open_seconds * 1000))
            yield client
        finally:
            await client.close()


class _RtspSession:
    """One RTSP session on its own thread; it reaches the loop only by ``call_soon_threadsafe``."""

    def __init__(self, source: RtspSource, loop: asyncio.AbstractEventLoop) -> None:
        self._source = source
        self._loop = loop
        self._queue: asyncio.Queue[EncodedPacket | None] = asyncio.Queue(QUEUE_PACKETS)
        self._opened: asyncio.Future[StreamInfo | SourceError] = loop.create_future()
        self._ended: SourceError | None = None
        self._closed = asyncio.Event()
        self._stop = threading.Event()
        self._skipping = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=f"rtsp:{source.camera_id}",
                                         daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- the loop's side ----------------------------------------------------------------

    async def wait_open(self) -> StreamInfo:
        source = self._source
        try:
            # The thread gives up on its own after open_timeout; this only guards against an
            # FFmpeg that ignores its interrupt callback.
            async with asyncio.timeout(source.open_timeout + 2.0):
                outcome = await asyncio.shield(self._opened)
        except TimeoutError as exc:
            raise SourceError(source.camera_id, "timeout",
                              f"no answer within {source.open_timeout:g} s") from exc
        if isinstance(outcome, SourceError):
            raise outcome
        return outcome

    async def next_packet(self) -> EncodedPacket:
        source = self._source
        try:
            # The thread's read timeout (stall_seconds) ends the session first; this is a guard.
            async with asyncio.timeout(source.stall_seconds + 1.0):
                packet = await self._queue.get()
        except TimeoutError as exc:
            raise SourceError(source.camera_id, "stalled",
                              f"no packet for {source.stall_seconds:g} s") from exc
        if packet is None:
            assert self._ended is not None
            raise self._ended
        return packet

    async def stop(self) -> None:
        """Ask the thread to close the connection and wait (bounded) until it has."""
        self._stop.set()
        bound = self._source.open_timeout + self._source.stall_seconds + 1.0
        try:
            async with asyncio.timeout(bound):
                await self._closed.wait()
        except TimeoutError:
            self._source._log.warning("camera connection slow to close, left to its thread",
                                      waited_s=bound)

    def _deliver(self, packet: EncodedPacket) -> None:
        if self._skipping:
            if not packet.keyframe:
                self.dropped += 1
                return
            self._skipping = False
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            # Overflow policy: the loop is far behind; drop what waits, resume at a key frame.
            while not self._queue.empty():
                self._queue.get_nowait()
                self.dropped += 1
            self.dropped += 1
            self._skipping = True
            self._source._log.warning("camera packets discarded, loop too slow; resuming at next key frame",
                                      dropped=self.dropped)

    def _resolve_open(self, outcome: StreamInfo | SourceError) -> None:
        if not self._opened.done():
            self._opened.set_result(outcome)

    def _end(self, error: SourceError) -> None:
        if not self._opened.done():
            self._opened.set_result(error)
            return
        self._ended = error
        if self._queue.full():
            self._queue.get_nowait()  # the session is over: the sentinel matters more
        self._queue.put_nowait(None)

    # --- the thread's side --------------------------------------------------------------

    def _call(self, callback: Any, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            self._stop.set()  # the loop is gone: nobody is listening any more

    def _fail(self, reason: str, detail: str) -> None:
        self._call(self._end, SourceError(self._source.camera_id, reason,
                                          self._source.target.redact(detail)))

    def _run(self) -> None:
        source = self._source
        options = dict(PROBE_OPTIONS, rtsp_transport=source.target.transport,
                       timeout=str(int(source.open_timeout * 1_000_000)))
        started = time.monotonic()
        # FFmpeg's H.264 parser holds the latest access unit until the next one begins. When the
        # camera goes quiet, the first read timeout only flushes that unit; the second raises.
        # Two half-length timeouts put the stall verdict stall_seconds after the last frame
        # (half that for a codec FFmpeg does not parse, such as MJPEG: stricter, never later).
        read_timeout = source.stall_seconds / 2
        try:
            try:
                try:
                    container = av.open(source.target.authenticated_url, options=options,
                                        timeout=(source.open_timeout, read_timeout))
                except av.error.HTTPServerError:
                    # 5xx is often "not now": a camera still tearing down the last session
                    # (our own DESCRIBE, say). Ask once more before calling it refused.
                    if self._stop.wait(BUSY_RETRY_SECONDS):
                        return
                    container = av.open(source.target.authenticated_url, options=options,
                                        timeout=(source.open_timeout, read_timeout))
            except av.error.FFmpegError as exc:
                reason, detail = classify_open_error(exc, time.monotonic() - started,
                                                     source.open_timeout)
                self._fail(reason, detail)
                return
            try:
                self._read(container, started)
            finally:
                container.close()
        except Exception as exc:  # noqa: BLE001 - a reader thread must report every failure
            # Never let a reader thread die silently: the feed reports it and retries.
            self._fail("stalled", f"camera reader failed: {type(exc).__name__}: {exc}")
        finally:
            self._call(self._closed.set)

    def _read(self, container: Any, started: float) -> None:
        source = self._source
        if not container.streams.video:
            self._fail("codec", "the camera's stream has no video")
            return
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context is not None else "unknown"
        transcoder: H264Transcoder | None = None
        rate = float(stream.guessed_rate or stream.average_rate or 15)
        if codec not in PASSTHROUGH_CODECS:
            if not source.transcode_allowed or stream.codec_context is None:
                self._fail("codec", f"the camera sends {codec}; only H.264 passes through "
                                    "(transcode = true in the inventory allows re-encoding)")
                return
            transcoder = H264Transcoder(stream.codec_context, fps=rate)
        parameter_sets = ParameterSets(None if transcoder else stream.codec_context.extradata)
        time_base: Fraction = stream.time_base or CLOCK
        frame_ticks = max(1, round(1 / (rate * time_base)))
        self._call(self._resolve_open, StreamInfo(
            codec, transcoder is not None, stream.codec_context.width,
            stream.codec_context.height, time.monotonic() - started))
        last_pts: int | None = None
        try:
            for packet in container.demux(stream):
                if self._stop.is_set():
                    return
                if packet.size == 0:
                    continue  # the demuxer's flush packet at the end of the stream
                if transcoder is not None:
                    for unit in transcoder.transcode(packet):
                        data = parameter_sets.complete(unit.data, unit.keyframe)
                        self._call(self._deliver, EncodedPacket(data, unit.pts, CLOCK, unit.keyframe))
                    continue
                pts = packet.pts if packet.pts is not None else packet.dts
                if pts is None:  # FFmpeg leaves the first RTP frames' timestamps unset
                    pts = last_pts + frame_ticks if last_pts is not None else 0
                last_pts = pts
                keyframe = bool(packet.is_keyframe)
                data = parameter_sets.complete(bytes(packet), keyframe)
                self._call(self._deliver, EncodedPacket(data, pts, time_base, keyframe))
        except av.error.ExitError:
            if not self._stop.is_set():
                self._fail("stalled", f"no packet for {source.stall_seconds:g} s")
            return
        except av.error.FFmpegError as exc:
            if not self._stop.is_set():
                self._fail("stalled", f"the stream broke: {_strerror(exc)}")
            return
        finally:
            if transcoder is not None:
                transcoder.close()
        if not self._stop.is_set():
            self._fail("stalled", "the camera ended the stream")


def _strerror(exc: av.error.FFmpegError) -> str:
    return str(getattr(exc, "strerror", None) or type(exc).__name__)


_UNREACHABLE = {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


def classify_open_error(exc: av.error.FFmpegError, elapsed: float,
                        open_timeout: float) -> tuple[str, str]:
    """(reason, detail) for a failed RTSP open. The detail still needs redacting."""
    text = _strerror(exc)
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return "unauthorized", f"the camera rejected the credentials ({text})"
    if isinstance(exc, av.error.ConnectionRefusedError):
        return "refused", "connection refused"
    if isinstance(exc, av.error.HTTPClientError | av.error.HTTPServerError):
        return "refused", f"the camera refused the stream ({text})"
    if isinstance(exc, av.error.ExitError) or exc.errno in _UNREACHABLE:
        return "timeout", f"no answer within {open_timeout:g} s ({text})"
    if elapsed >= 0.9 * open_timeout:
        # An interrupted open often surfaces as "invalid data" rather than as an exit request.
        return "timeout", f"no answer within {open_timeout:g} s"
    return "refused", f"the camera could not be opened ({text})"
