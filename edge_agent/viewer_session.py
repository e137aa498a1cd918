"""One viewer watching one camera: an aiortc peer connection fed by the camera's shared feed.

The session answers the viewer's SDP offer with H.264 only (the camera's own stream, passed
through), then lives until the viewer leaves, the core closes it, or its grant expires. Its RTP
sender is a ``PacketizedRtpSender``: the feed's payloads, packetized once for every viewer.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from edge_agent.camera_feed import CameraFeed
from edge_agent.exceptions import OfferRejected
from edge_agent.packetized_sender import PacketizedRtpSender
from edge_agent.passthrough_track import PassthroughVideoTrack
from protos.safetynet.v1 import mqtt_pb2
from runtime.webrtc import WebRtcSettings

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 20.0


class SessionState(enum.Enum):
    NEW = "new"
    ANSWERED = "answered"
    CONNECTED = "connected"
    CLOSED = "closed"


class InvalidStateError(Exception):
    pass


ClosedListener = Callable[["ViewerSession", str], Awaitable[None]]


class ViewerSession:
    #: Off only to measure against aiortc's own sender (bench/agent_process.py --sender aiortc).
    packetized_sender = True

    def __init__(self, *, session_id: str, camera_id: str, feed: CameraFeed,
                 webrtc: WebRtcSettings, expires_at: datetime, on_closed: ClosedListener,
                 connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
                 send_loss: float = 0.0) -> None:
        """``send_loss``: drop this fraction of first transmissions (tests of NACK recovery)."""
        self.session_id = session_id
        self.camera_id = camera_id
        self.expires_at = expires_at
        self._feed = feed
        self._webrtc = webrtc
        self._on_closed = on_closed
        self._connect_timeout = connect_timeout
        self._send_loss = send_loss
        self._pc: RTCPeerConnection | None = None
        self._track: PassthroughVideoTrack | None = None
        #: The RTP sender once answered: a ``PacketizedRtpSender`` for passthrough tracks.
        self.sender: RTCRtpSender | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._closing: asyncio.Task[None] | None = None
        self._state = SessionState.NEW
        self.opened_at = time.monotonic()
        self.started_at = datetime.now(UTC)
        self.bytes_sent = 0
        self.close_reason = ""
        self._log = log.bind(session=session_id, camera=camera_id)

    @property
    def state(self) -> SessionState:
        return self._state

    def _set_state(self, state: SessionState) -> None:
        self._log.info("viewer session state", old=self._state.value, new=state.value)
        self._state = state

    async def answer(self, sdp_offer: str) -> str:
        """Answer the viewer's offer; raise OfferRejected(BAD_OFFER) when it cannot be used."""
        if self._state is not SessionState.NEW:
            raise InvalidStateError(f'Cannot answer in session state "{self._state.value}"')
        pc = RTCPeerConnection(self._webrtc.rtc_configuration())
        self._pc = pc
        self._track = PassthroughVideoTrack(self._feed.subscribe())
        sender = pc.addTrack(self._track)
        transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        if self.packetized_sender and isinstance(self._track, PassthroughVideoTrack):
            self.sender = PacketizedRtpSender.adopt(
                sender, self._track.subscription, loss=self._send_loss)
        else:
            self.sender = sender
        capabilities = RTCRtpSender.getCapabilities("video")
        transceiver.setCodecPreferences(
            [c for c in capabilities.codecs if c.mimeType.lower() in ("video/h264", "video/rtx")]
        )
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp_offer, type="offer"))
            if transceiver.mid is None:
                raise ValueError("the offer has no video m-line")
            await pc.setLocalDescription(await pc.createAnswer())
        except asyncio.CancelledError:
            await self.close("cancelled")
            raise
        except Exception as exc:
            # aiortc raises assorted errors for unusable SDP; translate them once, here.
            await self.close("bad offer")
            reason = str(exc) or type(exc).__name__
            if "send parameters" in reason:
                reason = "the offer accepts no H.264 video (the camera's codec, passed through)"
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_BAD_OFFER, f"unusable SDP offer: {reason}") from exc

        pc.on("connectionstatechange", self._on_connection_state)
        self._set_state(SessionState.ANSWERED)
        self._timers.append(asyncio.create_task(self._expire(), name=f"expire:{self.session_id}"))
        self._timers.append(asyncio.create_task(self._connect_deadline(),
                                                name=f"connect:{self.session_id}"))
        return pc.localDescription.sdp

    def _on_connection_state(self) -> None:
        if self._pc is None or self._state is SessionState.CLOSED:
            return  # our own close() is tearing the connection down
        state = self._pc.connectionState
        if state == "connected" and self._state is SessionState.ANSWERED:
            self._set_state(SessionState.CONNECTED)
        elif state in ("failed", "closed"):
            self.close_soon("viewer left" if state == "closed" else "connection failed")

    def close_soon(self, reason: str) -> None:
        """Close from a callback that cannot await; the task is kept and awaited by ``close``."""
        if self._closing is None and self._state is not SessionState.CLOSED:
            self._closing = asyncio.create_task(self.close(reason), name=f"close:{self.session_id}")

    async def _expire(self) -> None:
        await asyncio.sleep(max(0.0, (self.expires_at - datetime.now(UTC)).total_seconds()))
        self.close_soon("expired")

    async def _connect_deadline(self) -> None:
        await asyncio.sleep(self._connect_timeout)
        if self._state is SessionState.ANSWERED:
            self.close_soon("viewer never connected")

    @property
    def duration_seconds(self) -> float:
        return time.monotonic() - self.opened_at

    async def close(self, reason: str) -> None:
        """Stop media, free the camera subscription, tell the listener once; idempotent."""
        if self._state is SessionState.CLOSED:
            return
        self.close_reason = reason
        self._set_state(SessionState.CLOSED)
        current = asyncio.current_task()
        for timer in self._timers:
            if timer is not current:
                timer.cancel()
        pc, self._pc = self._pc, None
        if pc is not None:
            self.bytes_sent = await _bytes_sent(pc)
            await pc.close()
        if self._track is not None:
            self._track.stop()
        self._log.info("viewer session closed", reason=reason, bytes_sent=self.bytes_sent,
                       seconds=round(self.duration_seconds, 2))
        await self._on_closed(self, reason)


async def _bytes_sent(pc: RTCPeerConnection) -> int:
    try:
        report = await pc.getStats()
    except Exception:  # noqa: BLE001 - stats are for the record only
        # A transport already torn down has none.
        return 0
    return sum(int(getattr(s, "bytesSent", 0) or 0) for s in report.values() if s.type == "outbound-rtp")
