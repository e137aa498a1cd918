"""An RTSP client for H.264 over RTP interleaved in the RTSP connection (TCP), on the event loop.

FFmpeg's RTSP demuxer (``rtsp.py``'s reader thread) costs a thread wake-up and a hand-over per
access unit, and its H.264 parser holds each access unit until the next one begins (up to 67 ms
at 15 fps). For the common case, a camera sending H.264 over TCP, this client does the job on the
loop instead: ``DESCRIBE`` (Digest or Basic auth, as ``camera_probe`` does), ``SETUP`` with
``interleaved=0-1``, ``PLAY``, then large reads parsed in place; an access unit is handed on the
moment its last packet (the RTP marker bit) arrives. Anything else (UDP, RTSPS, another codec,
transcoding) stays with FFmpeg; ``open()`` raises ``NotCarried`` for a camera that is not H.264.

Failures raise ``SourceError`` with the same reasons and details as the FFmpeg path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING
from urllib.parse import unquote

import structlog

from edge_agent.camera_sources.base import EncodedPacket
from edge_agent.camera_sources.h264 import NAL_IDR, START_CODE, ParameterSets
from edge_agent.exceptions import SourceError

if TYPE_CHECKING:
    from edge_agent.camera_probe import RtspResponse
    from edge_agent.camera_sources.rtsp import RtspTarget

log = structlog.get_logger(__name__)

__all__ = ["InterleavedRtspClient", "NotCarried", "SdpVideo"]

USER_AGENT = "SafetyNet-Agent"
READ_BYTES = 256 * 1024
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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
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
        try:
            self._reader, self._writer = await asyncio.open_connection(
                self.target.host, self.target.port, limit=READ_BYTES)
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
        return video

    def _send(self, method: str, uri: str, headers: list[str]) -> None:
        assert self._writer is not None
        self._cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self._cseq}", f"User-Agent: {USER_AGENT}",
                 *headers]
        if self._session:
            lines.append(f"Session: {self._session}")
        if self._challenge:
            lines.append(f"Authorization: {self._authorization(method, uri)}")
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def _request(self, method: str, uri: str, headers: list[str]) -> RtspResponse:
        from edge_agent.camera_probe import ProbeFailed, read_response  # see SdpVideo.parse

        assert self._reader is not None
        for attempt in (1, 2):
            self._send(method, uri, headers)
            try:
                response = await read_response(self._reader)
            except ProbeFailed as exc:
                raise self._error(exc.reason, exc.detail) from exc
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
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
        assert self._reader is not None and self.video is not None
        reader, video = self._reader, self.video
        dropped = set() if self.keep_filler else {NAL_FILLER}
        parameter_sets = ParameterSets(video.parameter_sets or None)
        time_base = Fraction(1, video.clock_rate)
        loop = asyncio.get_running_loop()
        next_keepalive = loop.time() + self._keepalive / 2
        buffer = bytearray()
        parts: list[bytes | bytearray] = []
        keyframe = broken = False
        skipping = True  # until the first key frame: nothing before it decodes
        expected: int | None = None
        unit_timestamp: int | None = None
        wraps = 0
        last_timestamp: int | None = None
        rtp, rtcp = self._channel, self._channel + 1
        media_deadline = loop.time() + self.stall_seconds  # RTCP alone does not count
        while True:
            try:
                async with asyncio.timeout_at(media_deadline):
                    chunk = await reader.read(READ_BYTES)
            except TimeoutError as exc:
                raise self._error("stalled", f"no packet for {self.stall_seconds:g} s") from exc
            except ConnectionError as exc:
                raise self._error("stalled", "the camera ended the stream") from exc
            if not chunk:
                raise self._error("stalled", "the camera ended the stream")
            buffer += chunk
            data = buffer  # parsed in place: only the units kept are copied out
            pos, size = 0, len(data)
            had_media = False
            while size - pos >= 4:
                if data[pos] != 0x24:  # an RTSP response (to a keep-alive) between packets
                    end = data.find(b"\r\n\r\n", pos)
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
                timestamp = int.from_bytes(data[start + 4:start + 8], "big")
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
                    parts, keyframe, broken = [], False, True  # no marker on the last unit
                unit_timestamp = timestamp
                kind = data[offset] & 0x1F
                if kind in dropped:
                    pass
                elif kind < NAL_STAP_A:
                    parts += (START_CODE, data[offset:end])
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
                            parts += (START_CODE, data[inner:inner + length])
                        inner += length
                elif kind == NAL_FU_A and end - offset > 2 and data[offset + 1] & 0x1F not in dropped:
                    header = data[offset + 1]
                    if header & 0x80:
                        nal = (data[offset] & 0xE0) | (header & 0x1F)
                        parts += (START_CODE, bytes((nal,)))
                        keyframe = keyframe or header & 0x1F == NAL_IDR
                    parts.append(data[offset + 2:end])
                if not marker:
                    continue
                # The access unit is complete: hand it on now, not when the next one starts.
                unit = b"".join(parts)
                parts = []
                unit_keyframe, keyframe = keyframe, False
                if broken or (skipping and not unit_keyframe):
                    broken = False
                    skipping = True
                    continue
                skipping = False
                if last_timestamp is not None and timestamp < (last_timestamp & 0xFFFFFFFF) \
                        and (last_timestamp & 0xFFFFFFFF) - timestamp > 1 << 31:
                    wraps += 1
                unwrapped = timestamp + (wraps << 32)
                last_timestamp = unwrapped
                yield EncodedPacket(parameter_sets.complete(unit, unit_keyframe), unwrapped,
                                    time_base, unit_keyframe)
            del buffer[:pos]
            if had_media:
                media_deadline = loop.time() + self.stall_seconds
            if loop.time() >= next_keepalive:
                next_keepalive = loop.time() + self._keepalive / 2
                self._send("GET_PARAMETER", self.target.url, [])

    async def close(self) -> None:
        """TEARDOWN (best effort) and close the connection; idempotent."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if self._session and not writer.is_closing():
            try:
                self._writer = writer
                self._send("TEARDOWN", self.target.url, [])
            except (ConnectionError, RuntimeError):
                log.debug("no teardown: the camera is gone", camera=self.camera_id)
            finally:
                self._writer = None
        writer.close()
        with contextlib.suppress(OSError):  # the camera hung up first
            await writer.wait_closed()


def _is_bye(data: bytes | bytearray, start: int, end: int) -> bool:
    """Whether the compound RTCP packet ``data[start:end]`` holds a BYE (payload type 203)."""
    pos = start
    while pos + 4 <= end:
        if data[pos + 1] == 203:
            return True
        pos += 4 * (((data[pos + 2] << 8) | data[pos + 3]) + 1)
    return False
