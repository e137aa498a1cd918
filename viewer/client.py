"""Watch one camera: offer H.264 receive-only, let the core relay it, decode what arrives.

Reports what an operator would care about: how long from asking (the OpenSession call) to the
first decoded frame, how many frames, what resolution, and, when the session ends under it (an
incident preempted it, its grant ended), why: the viewer asks the core (``GetSession``) as soon
as its media stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Self

import av
import cv2
import grpc
import structlog
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.core_channel import open_core_channel
from runtime.turn_credentials import from_proto as turn_from_proto
from runtime.webrtc import IceServer, WebRtcSettings, h264_codecs

log = structlog.get_logger(__name__)


class ViewError(Exception):
    """The view could not be opened; ``code`` is the gRPC status name (or a local cause)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class ViewReport:
    camera_id: str
    session_id: str = ""
    district_id: str = ""
    time_to_first_frame_ms: float | None = None
    open_session_ms: float | None = None
    frames: int = 0
    width: int = 0
    height: int = 0
    seconds: float = 0.0
    snapshot: str | None = None
    expires_at: str = ""
    ended_reason: str = ""        # why the session ended under the viewer ("preempted by …")
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def open_channel(core_address: str, ca_file: Path | None = None) -> grpc.aio.Channel:
    """A channel to the core (one ``HOST:PORT`` or a comma-separated list of its replicas,
    ``runtime.core_channel``): TLS trusting only ``ca_file`` (the city CA) when given, else plain
    (for a core on loopback: the demo and the tests)."""
    root = None
    if ca_file is not None:
        try:
            root = ca_file.read_bytes()
        except OSError as exc:
            raise ViewError("CA_FILE", f"cannot read {ca_file}: {exc.strerror}") from exc
    try:
        return open_core_channel(core_address, root)
    except (ValueError, OSError) as exc:
        raise ViewError("CORE_ADDRESS", str(exc)) from exc


def call_metadata(token: str | None) -> Sequence[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class CameraViewer:
    """One viewing session; an async context manager that closes the session on exit."""

    def __init__(self, core_address: str, camera_id: str, *, webrtc: WebRtcSettings,
                 token: str | None = None, channel: grpc.aio.Channel | None = None,
                 incident_id: str = "", breakglass_id: str = "",
                 ca_file: Path | None = None) -> None:
        self.camera_id = camera_id
        self._ca_file = ca_file
        self.incident_id = incident_id
        self.breakglass_id = breakglass_id
        self._core_address = core_address
        self._webrtc = webrtc
        self._token = token
        self._own_channel = channel is None
        self._channel = channel
        self._pc: RTCPeerConnection | None = None
        self.ice_servers: tuple[IceServer, ...] = ()
        self._receiver: asyncio.Task[None] | None = None
        self.report = ViewReport(camera_id)
        self.first_frame = asyncio.Event()
        self.last_image: Any = None
        self._t_open = 0.0
        self._frames_wanted: asyncio.Event = asyncio.Event()
        self._target_frames = 0
        self._closed = False
        self.ended = asyncio.Event()
        """Set when the session ended under the viewer; ``report.ended_reason`` says why."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self._channel is None:
            self._channel = open_channel(self._core_address, self._ca_file)
        stub = core_pb2_grpc.SessionServiceStub(self._channel)
        pc = RTCPeerConnection(self._webrtc.rtc_configuration())
        self._pc = pc
        transceiver = pc.addTransceiver("video", direction="recvonly")
        transceiver.setCodecPreferences(h264_codecs())
        track_ready: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and not track_ready.done():
                track_ready.set_result(track)

        await pc.setLocalDescription(await pc.createOffer())
        self._t_open = time.perf_counter()
        try:
            response = await stub.OpenSession(
                core_pb2.OpenSessionRequest(camera_id=self.camera_id, sdp_offer=pc.localDescription.sdp,
                                            incident_id=self.incident_id,
                                            breakglass_id=self.breakglass_id),
                metadata=call_metadata(self._token), timeout=20,
            )
        except grpc.aio.AioRpcError as exc:
            await self.close()
            raise ViewError(exc.code().name, exc.details() or "") from exc
        self.report.open_session_ms = (time.perf_counter() - self._t_open) * 1000
        self.report.session_id = response.session_id
        self.report.district_id = response.camera.district_id
        self.report.expires_at = response.expires_at.ToJsonString()
        # TURN minted for this session: the agent relays with them already (it got them with
        # the offer); kept for a reconnect of this viewer (docs/scale-out.md).
        self.ice_servers = turn_from_proto(response.ice_servers)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=response.sdp_answer, type="answer"))
        track = await track_ready
        self._receiver = asyncio.create_task(self._receive(track), name=f"view:{self.camera_id}")

    async def _receive(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                if not self._closed:
                    await self._learn_why_it_ended()
                return
            assert isinstance(frame, av.VideoFrame)
            self.report.frames += 1
            if not self.first_frame.is_set():
                self.report.time_to_first_frame_ms = (time.perf_counter() - self._t_open) * 1000
                self.report.width, self.report.height = frame.width, frame.height
                self.first_frame.set()
                await self._report_first_frame()
            self.last_image = frame
            if self._target_frames and self.report.frames >= self._target_frames:
                self._frames_wanted.set()

    async def _learn_why_it_ended(self) -> None:
        """The agent stopped the media: ask the core why (it records the end just after the
        agent's close, so a few quick asks), then set ``ended``."""
        reason = "the media stopped"
        if self._channel is not None and self.report.session_id:
            stub = core_pb2_grpc.SessionServiceStub(self._channel)
            request = core_pb2.GetSessionRequest(session_id=self.report.session_id)
            for pause in (0.05, 0.1, 0.2, 0.4, 0.8, 1.6):
                try:
                    status = await stub.GetSession(request, metadata=call_metadata(self._token),
                                                   timeout=5)
                except grpc.aio.AioRpcError as exc:
                    log.info("session end not learnt", session=self.report.session_id,
                             code=exc.code().name, details=exc.details())
                    break
                if not status.active:
                    reason = status.reason or "ended"
                    break
                await asyncio.sleep(pause)  # a remote record, not a local event: ask again
        self.report.ended_reason = reason
        log.info("session ended", session=self.report.session_id, reason=reason)
        self.ended.set()

    async def _report_first_frame(self) -> None:
        """Tell the core (golden time: report → grant → first frame, recorded there)."""
        if not self.incident_id or self._channel is None or not self.report.session_id:
            return
        stub = core_pb2_grpc.SessionServiceStub(self._channel)
        try:
            await stub.ReportFirstFrame(
                core_pb2.FirstFrameRequest(session_id=self.report.session_id, client="cli"),
                metadata=call_metadata(self._token), timeout=5)
        except grpc.aio.AioRpcError as exc:
            log.info("first frame not recorded", session=self.report.session_id,
                     code=exc.code().name, details=exc.details())

    async def wait_frames(self, count: int, timeout: float) -> None:
        self._target_frames = count
        if self.report.frames >= count:
            return
        self._frames_wanted.clear()  # set by an earlier, smaller target
        async with asyncio.timeout(timeout):
            await self._frames_wanted.wait()

    def save_snapshot(self, path: Path) -> None:
        if self.last_image is None:
            raise ViewError("NO_VIDEO", "no frame was decoded, nothing to save")
        image = self.last_image.to_ndarray(format="bgr24")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(path), image):
            raise ViewError("SNAPSHOT", f"cannot write {path}")
        self.report.snapshot = str(path)

    async def close(self) -> None:
        """Tell the core the session is over, then stop the peer connection; idempotent."""
        if self._closed:
            return
        self._closed = True
        session_id = self.report.session_id
        if session_id and self._channel is not None:
            stub = core_pb2_grpc.SessionServiceStub(self._channel)
            try:
                await stub.CloseSession(core_pb2.CloseSessionRequest(session_id=session_id),
                                        metadata=call_metadata(self._token), timeout=5)
            except grpc.aio.AioRpcError as exc:
                log.info("close session not confirmed", session=session_id,
                         code=exc.code().name, details=exc.details())
        receiver, self._receiver = self._receiver, None
        pc, self._pc = self._pc, None
        if pc is not None:
            await pc.close()
        if receiver is not None:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        channel, self._channel = self._channel, None
        if channel is not None and self._own_channel:
            await channel.close(None)


async def watch(core_address: str, camera_id: str, *, seconds: float, webrtc: WebRtcSettings,
                token: str | None = None, snapshot: Path | None = None,
                first_frame_timeout: float = 10.0, incident_id: str = "",
                breakglass_id: str = "", ca_file: Path | None = None) -> ViewReport:
    """Open a session, wait for the first frame, keep decoding for ``seconds``, close."""
    started = time.perf_counter()
    async with CameraViewer(core_address, camera_id, webrtc=webrtc, token=token,
                            incident_id=incident_id, breakglass_id=breakglass_id,
                            ca_file=ca_file) as viewer:
        try:
            async with asyncio.timeout(first_frame_timeout):
                await viewer.first_frame.wait()
        except TimeoutError as exc:
            raise ViewError("NO_VIDEO", f"no frame decoded within {first_frame_timeout:g} s") from exc
        with contextlib.suppress(TimeoutError):  # watching for a while is the point here
            async with asyncio.timeout(max(0.0, seconds)):
                await viewer.ended.wait()
        if snapshot is not None:
            viewer.save_snapshot(snapshot)
        viewer.report.seconds = round(time.perf_counter() - started, 3)
        return viewer.report
