"""The agent in relay mode: a camera whose source is a district's WebRTC stream (docs/cloud-relay.md).

A relay runs in the city's cloud. For one camera it opens **one** WebRTC session to the district's
agent (through ``open_upstream``, which in a deployment is the core's signalling with a relay
grant) and serves every further viewer from its own ``CameraFeed`` — the same GOP cache, bounded
queues and passthrough tracks an agent uses. aiortc hands a receiver's video over decoded, so the
relay encodes each picture **once** (libx264, one encoder per relayed camera, in a worker thread)
and fans the packets out; viewers' sessions never encode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable

import av
import structlog
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from edge_agent.camera_sources.base import TIME_BASE, CameraSource, EncodedPacket
from edge_agent.camera_sources.transcoder import H264Transcoder
from edge_agent.exceptions import SourceError
from runtime.webrtc import WebRtcSettings, h264_codecs

log = structlog.get_logger(__name__)

#: Sends the relay's SDP offer to the district's agent; returns (SDP answer, upstream session id).
OpenUpstream = Callable[[str], Awaitable[tuple[str, str]]]
#: Ends the upstream session (by id) at the district's agent.
CloseUpstream = Callable[[str], Awaitable[None]]

FIRST_FRAME_TIMEOUT = 10.0


class RelaySource(CameraSource):
    """One district camera, pulled once over WebRTC, re-served from the cloud."""

    kind = "relay"
    codec = "h264"
    transcoding = True  # decoded by aiortc, encoded once here (see the module docstring)

    def __init__(self, camera_id: str, *, webrtc: WebRtcSettings, open_upstream: OpenUpstream,
                 close_upstream: CloseUpstream, fps: float = 15.0) -> None:
        self.camera_id = camera_id
        self.opens = 0
        self.upstream_session: str | None = None
        self._webrtc = webrtc
        self._open = open_upstream
        self._close = close_upstream
        self._fps = fps
        self._log = log.bind(camera=camera_id)

    async def packets(self) -> AsyncGenerator[EncodedPacket, None]:
        self.opens += 1
        pc = RTCPeerConnection(self._webrtc.rtc_configuration())
        encoder = H264Transcoder(None, fps=self._fps)
        try:
            track = await self._connect(pc)
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    self._log.info("relay upstream ended", session=self.upstream_session)
                    return
                assert isinstance(frame, av.VideoFrame)
                for unit in await asyncio.to_thread(encoder.encode, frame):
                    yield EncodedPacket(unit.data, unit.pts, TIME_BASE, unit.keyframe)
        finally:
            encoder.close()
            await pc.close()
            session, self.upstream_session = self.upstream_session, None
            if session is not None:
                await self._close(session)

    async def _connect(self, pc: RTCPeerConnection) -> MediaStreamTrack:
        pc.addTransceiver("video", direction="recvonly").setCodecPreferences(
            h264_codecs(with_rtx=False))
        track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()

        @pc.on("track")
        def on_track(received: MediaStreamTrack) -> None:
            if not track.done():
                track.set_result(received)

        await pc.setLocalDescription(await pc.createOffer())
        answer, self.upstream_session = await self._open(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        try:
            async with asyncio.timeout(FIRST_FRAME_TIMEOUT):
                return await track
        except TimeoutError as exc:
            raise SourceError(self.camera_id, "timeout",
                              "the district's stream did not start within "
                              f"{FIRST_FRAME_TIMEOUT:g} s") from exc
