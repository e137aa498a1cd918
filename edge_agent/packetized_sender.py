"""An aiortc RTP sender for passthrough tracks: the feed's shared payloads, sent in batches.

aiortc's ``RTCRtpSender`` asks its track for a frame, packetizes it (``H264Encoder.pack``),
builds each RTP packet in Python and awaits one SRTP-protect-and-``sendto`` per packet through
aioice, for every viewer. ``PacketizedRtpSender`` replaces only that media loop
(``_run_rtp``) and the answer to a NACK (``_retransmit``): it reads access units the camera's
feed has already packetized (``access_unit``), writes this viewer's headers (``rtp_stream``),
protects each packet with the session's SRTP and hands a whole access unit's packets to the
kernel in a few segmented sends (``udp_batch_sender``). Signalling, ICE, DTLS, RTCP (sender
reports, receiver reports, NACK, PLI, REMB) and stats stay aiortc's.

It works on aiortc's seams, not a fork: ``adopt()`` turns the sender ``addTrack`` created into
one of these before negotiation, and the few pieces of aiortc's private state it must share
(the events ``stop()`` waits on, the negotiated MID and extension IDs, the counters its RTCP
sender reports carry) are named once, in ``AIORTC_SENDER_STATE``; a test checks that the
installed aiortc still has them. Beyond those it reads the DTLS transport's SRTP session
(``_tx_srtp``) and aioice's nominated candidate pair, for the socket and the viewer's address.
Packets that do not go out on a plain UDP pair (a TURN relay) take aioice's own path.
"""

from __future__ import annotations

import asyncio
import random
import socket
from typing import Any, cast

import structlog
from aioice.ice import StunProtocol
from aiortc import RTCRtpSender, clock
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import HeaderExtensions, HeaderExtensionsMap

from edge_agent.access_unit import AccessUnit
from edge_agent.camera_feed import FeedSubscription
from edge_agent.rtp_stream import RtpStream
from edge_agent.udp_batch_sender import UdpBatchSender

log = structlog.get_logger(__name__)

__all__ = ["AIORTC_SENDER_STATE", "PacketizedRtpSender"]

_PRIVATE = "_RTCRtpSender__"
#: aiortc's sender state this class shares (name-mangled attributes of ``RTCRtpSender``).
AIORTC_SENDER_STATE = ("rtp_started", "rtp_exited", "mid", "rtp_header_extensions_map",
                       "rtx_payload_type", "ntp_timestamp", "rtp_timestamp", "octet_count",
                       "packet_count")


class PacketizedRtpSender(RTCRtpSender):
    """See the module docstring. Build with ``adopt(sender, subscription)``."""

    #: Off only to measure what segmentation offload is worth (bench/media_path.py).
    segmented_sends = True

    _subscription: FeedSubscription
    _stream: RtpStream | None
    _batch: UdpBatchSender | None
    _pair: object
    _loss: float
    _random: random.Random

    @classmethod
    def adopt(cls, sender: RTCRtpSender, subscription: FeedSubscription, *,
              loss: float = 0.0, seed: int | None = None) -> PacketizedRtpSender:
        """Make ``sender`` (not yet negotiated) send ``subscription``'s access units.

        ``loss`` drops that fraction of first transmissions on purpose (tests: a lossy viewer
        that must recover through NACK); retransmissions are never dropped.
        """
        sender.__class__ = cls
        adopted = cast(PacketizedRtpSender, sender)
        adopted._subscription = subscription
        adopted._stream = None
        adopted._batch = None
        adopted._pair = None
        adopted._loss = loss
        adopted._random = random.Random(seed)
        return adopted

    @property
    def rtp_stream(self) -> RtpStream | None:
        """This viewer's stream once media flows: counters, history, retransmissions."""
        return self._stream

    @property
    def batch_sender(self) -> UdpBatchSender | None:
        return self._batch

    def _state(self, name: str) -> Any:
        return getattr(self, _PRIVATE + name)

    def _set_state(self, name: str, value: object) -> None:
        setattr(self, _PRIVATE + name, value)

    # --- the media loop (replaces RTCRtpSender._run_rtp) ---------------------------------

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        self._state("rtp_started").set()
        extension_map: HeaderExtensionsMap = self._state("rtp_header_extensions_map")
        mid = self._state("mid")

        def extensions() -> tuple[int, bytes]:
            values = HeaderExtensions()
            values.mid = mid
            values.abs_send_time = (clock.current_ntp_time() >> 14) & 0x00FFFFFF
            profile, block = extension_map.set(values)
            if not block:
                return 0x80, b""
            return 0x90, profile.to_bytes(2, "big") + (len(block) >> 2).to_bytes(2, "big") + block

        stream = self._stream = RtpStream(
            ssrc=self._ssrc, payload_type=codec.payloadType or 0,
            sequence_number=random_sequence_number(), timestamp_origin=random.getrandbits(32),
            rtx_ssrc=self._rtx_ssrc, rtx_payload_type=self._state("rtx_payload_type"),
            rtx_sequence_number=random_sequence_number(), extensions=extensions)
        subscription = self._subscription
        try:
            while True:
                unit = await subscription.get()
                if unit is None:
                    break
                units = [unit, *subscription.take_ready()]
                if not self._enabled:
                    continue
                for packet in self._send_units(stream, units):
                    await self.transport.transport._send(packet)
        except (ConnectionError, MediaStreamError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            # aiortc's stop() waits for this loop to say it has exited: never die silently.
            log.exception("packetized sender failed")
        finally:
            if self._batch is not None:
                self._batch.close()
                self._batch = None
            if self.track is not None:
                self.track.stop()
            self._state("rtp_exited").set()

    def _send_units(self, stream: RtpStream, units: list[AccessUnit]) -> list[bytes]:
        """Protect and send ``units``; return the packets left for aioice to send one by one."""
        dtls = self.transport
        if dtls.state != "connected":
            raise ConnectionError("Cannot send encrypted RTP, not connected")
        packets: list[bytes] = []
        for unit in units:
            packets += stream.write(unit)
        protected = list(map(dtls._tx_srtp.protect, packets))
        if self._loss:
            protected = [p for p in protected if self._random.random() >= self._loss]
        batch = self._batch_sender()
        if batch is not None:
            batch.send(protected)
            protected = []
        self._set_state("ntp_timestamp", clock.current_ntp_time())
        self._set_state("rtp_timestamp", stream.last_timestamp)
        self._set_state("packet_count", stream.packets)
        self._set_state("octet_count", stream.payload_bytes)
        return protected  # not a plain UDP pair (a TURN relay): aioice's path, one at a time

    def _batch_sender(self) -> UdpBatchSender | None:
        """A batch sender on the nominated ICE pair's socket; renewed if the pair changes."""
        pair = self.transport.transport._connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        if pair is not self._pair:
            self._pair = pair
            if self._batch is not None:
                self._batch.close()
                self._batch = None
            # A relayed pair (TURN) has a StunProtocol over a TurnTransport, with no socket of
            # its own: its datagrams must go through aioice, which wraps them for the relay.
            sock = (pair.protocol.transport.get_extra_info("socket")
                    if isinstance(pair.protocol, StunProtocol) else None)
            if sock is not None:
                self._batch = UdpBatchSender(cast(socket.socket, sock), pair.remote_addr,
                                             gso=self.segmented_sends)
        return self._batch

    # --- NACK (replaces RTCRtpSender._retransmit) -----------------------------------------

    async def _retransmit(self, sequence_number: int) -> None:
        """Resend a packet this viewer reported lost, from this viewer's own history."""
        if self._stream is None:
            return
        packet = self._stream.retransmission(sequence_number)
        if packet is not None:
            await self.transport._send_rtp(packet)
