"""One viewer's outgoing RTP stream: its own SSRC, sequence numbers and timestamp origin.

The payloads come from the camera's feed, packetized once and shared by every viewer
(``access_unit``); a viewer's stream only writes the 12-byte header in front of each, with its
header extensions, and remembers what it sent so that a NACK from *this* viewer is answered from
*its* history (RFC 4588 retransmission when an RTX payload type was negotiated).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from edge_agent.access_unit import AccessUnit

__all__ = ["HISTORY_PACKETS", "RtpStream"]

#: Sent packets kept for retransmission, per viewer: ~1.5 s at 2.5 Mb/s. Entries share the
#: feed's payloads, so each costs a header, not a packet.
HISTORY_PACKETS = 1024

_HEADER = struct.Struct("!BBHII")
_RTX_SEQ = struct.Struct("!H")

#: Builds the header-extension block for the next access unit: (first header byte, block).
ExtensionWriter = Callable[[], tuple[int, bytes]]


def _no_extensions() -> tuple[int, bytes]:
    return 0x80, b""


class RtpStream:
    """Headers, history and retransmissions for one viewer; see the module docstring."""

    def __init__(self, *, ssrc: int, payload_type: int, sequence_number: int,
                 timestamp_origin: int, rtx_ssrc: int | None = None,
                 rtx_payload_type: int | None = None, rtx_sequence_number: int = 0,
                 extensions: ExtensionWriter = _no_extensions) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self._sequence = sequence_number & 0xFFFF
        self._rtx_sequence = rtx_sequence_number & 0xFFFF
        self._origin = timestamp_origin & 0xFFFFFFFF
        self._extensions = extensions
        # seq % HISTORY_PACKETS -> (seq, header, payload)
        self._history: list[tuple[int, bytes, bytes] | None] = [None] * HISTORY_PACKETS
        self.last_timestamp = self._origin
        self.packets = 0
        self.payload_bytes = 0
        self.retransmitted = 0

    @property
    def next_sequence_number(self) -> int:
        return self._sequence

    def write(self, unit: AccessUnit) -> list[bytes]:
        """The RTP packets (unprotected) that carry ``unit`` to this viewer."""
        first, block = self._extensions()
        timestamp = (self._origin + unit.timestamp) & 0xFFFFFFFF
        ssrc, history, pack = self.ssrc, self._history, _HEADER.pack
        plain = self.payload_type
        marked = plain | 0x80
        sequence = self._sequence
        payloads = unit.payloads
        last = len(payloads) - 1
        packets = []
        for index, payload in enumerate(payloads):
            header = pack(first, marked if index == last else plain, sequence, timestamp,
                          ssrc) + block
            history[sequence % HISTORY_PACKETS] = (sequence, header, payload)
            packets.append(header + payload)
            sequence = (sequence + 1) & 0xFFFF
        self._sequence = sequence
        self.last_timestamp = timestamp
        self.packets += len(payloads)
        self.payload_bytes += sum(map(len, payloads))
        return packets

    def retransmission(self, sequence_number: int) -> bytes | None:
        """The packet to resend for a NACKed sequence number, or None if no longer held."""
        entry = self._history[sequence_number % HISTORY_PACKETS]
        if entry is None or entry[0] != sequence_number:
            return None
        sequence, header, payload = entry
        self.retransmitted += 1
        if self.rtx_payload_type is None or self.rtx_ssrc is None:
            return header + payload
        rtx_header = _HEADER.pack(header[0], (header[1] & 0x80) | self.rtx_payload_type,
                                  self._rtx_sequence, int.from_bytes(header[4:8], "big"),
                                  self.rtx_ssrc) + header[12:]
        self._rtx_sequence = (self._rtx_sequence + 1) & 0xFFFF
        return rtx_header + _RTX_SEQ.pack(sequence) + payload
