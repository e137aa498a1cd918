"""Probes the cameras nobody watches, so the map shows which ones work before anyone needs them.

A probe is one RTSP ``DESCRIBE`` over a fresh TCP connection (Digest or Basic auth when the
camera asks): it proves the camera answers, accepts our credentials and offers a video stream in
a codec we can carry, and it costs the camera no media session and the agent no decoder. The
answer becomes the camera's status (online, or offline with refused / unauthorized / timeout /
codec) only while the camera is still idle: a pulled camera's status comes from its packets.

``CameraProber`` spreads the probes evenly: one every ``max(interval / cameras, 1 / rate)``
seconds, at most ``concurrency`` answering at once. For a district of 2,700 cameras with the
defaults (120 s, 25/s, 16) that is 22.5 probes a second, each camera every 120 s; past 3,000
cameras the rate cap holds and the cycle stretches instead. The probes due within the same
``PROBE_BATCH_SECONDS`` (0.5 s: about 11 of them) start together: the agent then wakes about
twice a second instead of 22 times, and the answers arrive together too. Waking was most of an
idle district's cost (1.7–2 % of a core at 2,720 cameras, 0.6 % batched, measured with
``bench/agent_scale.py``); a camera is still probed every 120 s, give or take half a second.

A probe is a small ``asyncio.Protocol`` (``_RtspExchange``) rather than asyncio streams, with
the request's bytes cached per camera and only the status line and headers split out.

Dead cameras must not stretch the cycle: a probe of a camera that does not answer waits its
whole timeout (5 s), and 30 % of 2,700 cameras dead would hold 34 slots on average, twice the 16
there are, so probes would start ever later (the cycle measured 281 s instead of 120 s). A probe
still unanswered after ``slow_after`` seconds (1 s; a working camera answers in milliseconds)
therefore lends its slot to the next probe and waits outside the limit, up to
``MAX_IN_FLIGHT`` probes in all. Waiting costs a socket, not CPU: the limit keeps bounding the
work, the schedule keeps its rate.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import errno
import functools
import hashlib
import os
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import unquote

import structlog

from edge_agent.camera_sources.rtsp import PASSTHROUGH_CODECS, RtspTarget
from edge_agent.config import CameraConfig, RtspSettings

log = structlog.get_logger(__name__)

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
USER_AGENT = "safetynet-probe/1"

#: SDP encoding names as FFmpeg names the codecs (what RtspSource reports once connected).
_SDP_CODECS = {"h264": "h264", "h265": "hevc", "jpeg": "mjpeg", "mp4v-es": "mpeg4", "vp8": "vp8"}


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str = ""   # when not ok: refused, unauthorized, timeout, codec
    detail: str = ""   # free of credentials
    codec: str = ""    # the offered video codec, when the camera answered
    seconds: float = 0.0


class ProbeFailed(Exception):
    """One probe's failure, carried up to ``probe_rtsp`` and turned into a ProbeResult there."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RtspResponse:
    status: int
    phrase: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


async def probe_rtsp(target: RtspTarget, *, timeout: float = 5.0,
                     transcode_allowed: bool = False) -> ProbeResult:
    """DESCRIBE ``target`` once; never raises for anything the camera does."""
    started = time.monotonic()
    try:
        codec = await _describe(target, timeout)
    except ProbeFailed as exc:
        return ProbeResult(False, exc.reason, target.redact(exc.detail),
                           seconds=time.monotonic() - started)
    if codec not in PASSTHROUGH_CODECS and not transcode_allowed:
        return ProbeResult(False, "codec", f"the camera offers {codec}; only H.264 passes through",
                           codec=codec, seconds=time.monotonic() - started)
    return ProbeResult(True, codec=codec, seconds=time.monotonic() - started)


BUSY_RETRY_SECONDS = 0.5  # longest wait before asking again a camera that said 503


async def _describe(target: RtspTarget, timeout: float) -> str:
    try:
        return await _describe_once(target, timeout)
    except CameraBusy as busy:
        # 503 is "not now" (a camera still tearing down the last session, say), not "never":
        # ask once more before calling the camera offline.
        await asyncio.sleep(min(busy.retry_after, BUSY_RETRY_SECONDS))
        try:
            return await _describe_once(target, timeout)
        except CameraBusy as again:
            raise ProbeFailed("refused", again.detail) from again


class CameraBusy(ProbeFailed):
    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__("refused", detail)
        self.retry_after = retry_after


async def _describe_once(target: RtspTarget, timeout: float) -> str:
    host, port, secure = _address(target)
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            transport, exchange = await loop.create_connection(
                _RtspExchange, host, port, ssl=_tls_context() if secure else None)
    except TimeoutError as exc:
        raise ProbeFailed("timeout", f"no connection within {timeout:g} s") from exc
    except ConnectionRefusedError as exc:
        raise ProbeFailed("refused", "connection refused") from exc
    except OSError as exc:
        unreachable = exc.errno in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH)
        raise ProbeFailed("timeout" if unreachable else "refused",
                          f"cannot connect: {exc.strerror or exc}") from exc
    try:
        response = await _request(exchange, describe_request(target.url, 1), timeout)
        if response.status == 401:
            authorization = _authorization(response, target)
            response = await _request(exchange, describe_request(target.url, 2, authorization),
                                      timeout)
        if response.status in (401, 403):
            raise ProbeFailed("unauthorized", f"the camera rejected the credentials "
                                              f"({response.status} {response.phrase})")
        detail = f"the camera refused the stream ({response.status} {response.phrase})"
        if response.status == 503:
            retry_after = next(iter(response.header("Retry-After")), "")
            raise CameraBusy(detail, float(retry_after) if retry_after.isdigit() else 0.2)
        if response.status != 200:
            raise ProbeFailed("refused", detail)
        return video_codec(response.body.decode("utf-8", "replace"))
    finally:
        transport.close()  # nothing to flush or wait for: the answer is in


@functools.lru_cache(maxsize=8192)
def _address(target: RtspTarget) -> tuple[str, int, bool]:
    return target.host, target.port, target.secure


@functools.lru_cache(maxsize=8192)
def describe_request(url: str, cseq: int, authorization: str | None = None) -> bytes:
    """The DESCRIBE request's bytes (cached: a camera is asked the same thing every cycle)."""
    lines = [f"DESCRIBE {url} RTSP/1.0", f"CSeq: {cseq}", "Accept: application/sdp",
             f"User-Agent: {USER_AGENT}"]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _request(exchange: _RtspExchange, request: bytes, timeout: float) -> RtspResponse:
    try:
        async with asyncio.timeout(timeout):
            return await exchange.ask(request)
    except TimeoutError as exc:
        raise ProbeFailed("timeout", f"no answer to DESCRIBE within {timeout:g} s") from exc


class _RtspExchange(asyncio.Protocol):
    """A probe's connection: one request at a time, its answer parsed as the bytes arrive.

    A protocol rather than asyncio streams: a probe is a few hundred bytes each way, and at a
    district's 22 probes a second the streams' reader, writer, drain and close handshakes were
    most of the agent's idle CPU.
    """

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[RtspResponse] | None = None
        self._lost: ProbeFailed | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def ask(self, request: bytes) -> asyncio.Future[RtspResponse]:
        """Send ``request``; the future resolves with its answer or fails with ProbeFailed."""
        assert self._transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        if self._lost is not None:
            self._answer.set_exception(self._lost)
        else:
            self._transport.write(request)
            self._parse()
        return self._answer

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._parse()

    def eof_received(self) -> bool:
        self._hung_up()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._hung_up()

    def _hung_up(self) -> None:
        self._lost = ProbeFailed("refused", "the camera closed the connection")
        self._fail(self._lost)

    def _fail(self, error: ProbeFailed) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(error)
        if self._transport is not None:
            self._transport.close()

    def _parse(self) -> None:
        answer = self._answer
        if answer is None or answer.done():
            return
        try:
            parsed = parse_response(self._buffer)
        except ProbeFailed as exc:
            self._fail(exc)
            return
        if parsed is not None:
            response, used = parsed
            del self._buffer[:used]
            answer.set_result(response)


def parse_response(data: bytes | bytearray) -> tuple[RtspResponse, int] | None:
    """One RTSP response at the start of ``data`` and the bytes it took; None: not all there yet.

    Only what a probe reads is split out: the status line and the headers (for Content-Length,
    WWW-Authenticate, Retry-After); the body is the SDP.
    """
    end = data.find(b"\r\n\r\n", 0, MAX_HEADER_BYTES + 4)
    if end < 0:
        if len(data) > MAX_HEADER_BYTES or (len(data) >= 5 and not data.startswith(b"RTSP/")):
            raise ProbeFailed("refused", "the camera's answer headers are too long"
                              if data.startswith(b"RTSP/") else "the camera's answer is not RTSP")
        return None
    status_line, *header_lines = bytes(data[:end]).decode("utf-8", "replace").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, phrase = rest.partition(" ")
    if not (version.startswith("RTSP/1.") and len(code) == 3 and code.isdigit()):
        raise ProbeFailed("refused", "the camera's answer is not RTSP")
    headers = []
    length = 0
    for line in header_lines:
        key, colon, value = line.partition(":")
        if colon:
            key, value = key.strip(), value.strip()
            headers.append((key, value))
            if key.lower() == "content-length" and not length:
                length = int(value) if value.isdigit() else 0
    if length > MAX_BODY_BYTES:
        raise ProbeFailed("refused", f"the camera's SDP is too long ({length} bytes)")
    used = end + 4 + length
    if len(data) < used:
        return None
    return RtspResponse(int(code), phrase, tuple(headers), bytes(data[end + 4:used])), used


async def read_response(reader: asyncio.StreamReader) -> RtspResponse:
    """One RTSP response from a stream (the RTSP pull's control channel), via ``parse_response``.

    Reads exactly the response: what follows it on the connection (interleaved RTP) stays unread.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ProbeFailed("refused", "the camera's answer is not RTSP") from exc
    parsed = parse_response(head)
    if parsed is None:  # the headers are in, so the body is what is missing
        partial = RtspResponse(0, "", _headers_of(head), b"")
        length = next(iter(partial.header("Content-Length")), "")
        body = await reader.readexactly(int(length)) if length.isdigit() else b""
        parsed = parse_response(head + body)
        if parsed is None:
            raise ProbeFailed("refused", "the camera's answer is incomplete")
    return parsed[0]


def _headers_of(head: bytes) -> tuple[tuple[str, str], ...]:
    lines = head.decode("utf-8", "replace").split("\r\n")[1:]
    return tuple((k.strip(), v.strip()) for k, colon, v in (line.partition(":") for line in lines)
                 if colon)


def _authorization(response: RtspResponse, target: RtspTarget) -> str:
    if not target.username:
        raise ProbeFailed("unauthorized", "the camera wants credentials and the inventory has none")
    user, password = unquote(target.username), unquote(target.password)
    challenges = response.header("WWW-Authenticate")
    digest = next((c for c in challenges if c.lower().startswith("digest")), None)
    if digest is not None:
        return digest_authorization(digest, user, password, "DESCRIBE", target.url)
    if any(c.lower().startswith("basic") for c in challenges):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    raise ProbeFailed("unauthorized", "the camera asks for an authentication scheme we lack")


def _challenge_params(challenge: str) -> dict[str, str]:
    return {key.lower(): quoted if quoted else bare for key, quoted, bare in
            re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', challenge.split(None, 1)[-1])}


def digest_authorization(challenge: str, user: str, password: str, method: str, uri: str,
                         *, cnonce: str | None = None) -> str:
    """The Authorization header answering a Digest ``challenge`` (RFC 2617; MD5, MD5-sess)."""
    params = _challenge_params(challenge)
    realm, nonce = params.get("realm", ""), params.get("nonce", "")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper() not in ("MD5", "MD5-SESS"):
        raise ProbeFailed("unauthorized", f"unsupported digest algorithm {algorithm}")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    cnonce = cnonce or os.urandom(8).hex()
    ha1 = md5(f"{user}:{realm}:{password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = md5(f"{method}:{uri}")
    qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    if "auth" in qops:
        nc = "00000001"
        response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    fields.append(f'response="{response}"')
    if "opaque" in params:
        fields.append(f'opaque="{params["opaque"]}"')
    if "algorithm" in params:
        fields.append(f"algorithm={algorithm}")
    return "Digest " + ", ".join(fields)


def video_codec(sdp: str) -> str:
    """The codec of the SDP's first video stream, named as FFmpeg names it."""
    in_video, payloads = False, []
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_video = line.startswith("m=video")
            if in_video:
                payloads = line.split()[3:]
        elif in_video and line.startswith("a=rtpmap:"):
            payload, _, encoding = line[len("a=rtpmap:"):].partition(" ")
            if payload in payloads[:1]:
                name = encoding.split("/", 1)[0].lower()
                return _SDP_CODECS.get(name, name)
    if not payloads:
        raise ProbeFailed("codec", "the camera offers no video stream")
    return "mjpeg" if payloads[0] == "26" else "unknown"  # 26: JPEG's static payload type


def _tls_context() -> ssl.SSLContext:
    # rtsps:// cameras carry self-signed certificates; FFmpeg does not verify them either.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


ProbeFunction = Callable[..., Awaitable[ProbeResult]]
SLOW_PROBE_SECONDS = 1.0  # a probe unanswered this long lends its slot (see module docstring)
MAX_IN_FLIGHT = 512       # probes at once, answering or waiting on silent cameras
PROBE_BATCH_SECONDS = 0.5  # probes due this close together start together (see module docstring)
ResultListener = Callable[[str, ProbeResult], Awaitable[None]]


class CameraProber:
    """Probes idle RTSP cameras on a spread, rate-capped schedule; an async context manager."""

    def __init__(self, cameras: Sequence[CameraConfig], settings: RtspSettings, *,
                 is_idle: Callable[[str], bool], on_result: ResultListener,
                 probe: ProbeFunction = probe_rtsp, slow_after: float = SLOW_PROBE_SECONDS,
                 max_in_flight: int = MAX_IN_FLIGHT,
                 batch_seconds: float = PROBE_BATCH_SECONDS) -> None:
        self._targets = {
            c.camera_id: (RtspTarget.parse(c.source, c.transport), c.transcode)
            for c in cameras if c.source.startswith(("rtsp://", "rtsps://"))
        }
        self._settings = settings
        self._is_idle = is_idle
        self._on_result = on_result
        self._probe = probe
        self._order = list(self._targets)
        self._next = 0
        self._urgent: collections.deque[str] = collections.deque()
        self._slots = asyncio.Semaphore(settings.probe_concurrency)
        self._scheduler: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        self._holding: set[asyncio.Task[None]] = set()  # probes that hold a slot
        self._slow_after = min(slow_after, settings.open_timeout_seconds / 2)
        self._max_in_flight = max(max_in_flight, settings.probe_concurrency)
        # A batch is a small slice of the cycle, so a small district still spreads its probes.
        self._batch_seconds = min(batch_seconds, settings.probe_interval_seconds / 50)
        self._cycle_started: float | None = None
        self.probes_started = 0
        self.results_applied = 0
        self.slots_lent = 0
        self.cycles_completed = 0
        self.last_cycle_seconds: float | None = None

    @property
    def cameras(self) -> int:
        return len(self._targets)

    @property
    def spacing_seconds(self) -> float:
        """Seconds between two probe starts: the schedule's one knob."""
        if not self._targets:
            return self._settings.probe_interval_seconds
        return max(self._settings.probe_interval_seconds / len(self._targets),
                   1.0 / self._settings.probes_per_second)

    @property
    def in_flight(self) -> int:
        return len(self._probes)

    @property
    def probes_per_second(self) -> float:
        return 1.0 / self.spacing_seconds if self._targets else 0.0

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def start(self) -> None:
        if self._scheduler is None and self._targets:
            log.info("camera probes scheduled", cameras=len(self._targets),
                     per_second=round(self.probes_per_second, 2),
                     cycle_s=round(self.spacing_seconds * len(self._targets), 1),
                     concurrency=self._settings.probe_concurrency)
            self._scheduler = asyncio.create_task(self._schedule(), name="camera-probes")

    def probe_soon(self, camera_id: str) -> None:
        """Probe this camera in the next free slot (it just went idle, its state is stale)."""
        if camera_id in self._targets and camera_id not in self._urgent:
            self._urgent.append(camera_id)

    async def close(self) -> None:
        """Stop scheduling, cancel probes in flight; idempotent."""
        scheduler, self._scheduler = self._scheduler, None
        tasks = [t for t in [scheduler, *self._probes] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            # Every probe due within the next batch starts now: one wake-up per batch.
            now = loop.time()
            horizon = now + self._batch_seconds
            while True:
                camera_id = self._pick()
                # Never burst to catch up after a slow spell (beyond one late batch): the rate
                # is the promise.
                due = max(due + self.spacing_seconds * random.uniform(0.9, 1.1),
                          now - self._batch_seconds)
                if self._is_idle(camera_id):
                    await self._slots.acquire()
                    self._start(loop, camera_id)
                if due > horizon:
                    break

    def _start(self, loop: asyncio.AbstractEventLoop, camera_id: str) -> None:
        task = asyncio.create_task(self._probe_one(camera_id), name=f"probe:{camera_id}")
        self._probes.add(task)
        self._holding.add(task)
        timer = loop.call_later(self._slow_after, self._lend_slot, task)
        task.add_done_callback(functools.partial(self._probe_done, timer))

    def _pick(self) -> str:
        if self._urgent:
            return self._urgent.popleft()
        if self._next == 0:
            self._cycle_turned()
        camera_id = self._order[self._next]
        self._next = (self._next + 1) % len(self._order)
        return camera_id

    def _cycle_turned(self) -> None:
        now = time.monotonic()
        if self._cycle_started is not None:
            self.last_cycle_seconds = now - self._cycle_started
            self.cycles_completed += 1
            log.debug("probe cycle", seconds=round(self.last_cycle_seconds, 1),
                      lent=self.slots_lent, in_flight=len(self._probes))
        self._cycle_started = now

    def _lend_slot(self, task: asyncio.Task[None]) -> None:
        """A probe waits on a silent camera: the next probe may start meanwhile."""
        if task in self._holding and len(self._probes) < self._max_in_flight:
            self._holding.discard(task)
            self._slots.release()
            self.slots_lent += 1

    def _probe_done(self, timer: asyncio.TimerHandle, task: asyncio.Task[None]) -> None:
        timer.cancel()
        self._probes.discard(task)
        if task in self._holding:
            self._holding.discard(task)
            self._slots.release()

    async def _probe_one(self, camera_id: str) -> None:
        target, transcode = self._targets[camera_id]
        self.probes_started += 1
        try:
            result = await self._probe(target, timeout=self._settings.open_timeout_seconds,
                                       transcode_allowed=transcode)
        except Exception:
            # A probe bug must not stop the schedule; the camera keeps its last known state.
            log.exception("camera probe crashed", camera=camera_id)
            return
        log.debug("camera probed", camera=camera_id, ok=result.ok, reason=result.reason or None,
                  ms=round(result.seconds * 1000))
        if self._is_idle(camera_id):  # a viewer may have started pulling it meanwhile
            self.results_applied += 1
            await self._on_result(camera_id, result)
