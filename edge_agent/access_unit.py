"""One H.264 access unit as the feed hands it to viewers: packetized into RTP payloads once.

aiortc packetizes every access unit again for every viewer (``H264Encoder.pack``). The feed does
it once per camera instead (RFC 6184, packetization mode 1): small NAL units travel together in
STAP-A packets, large ones are cut into FU-A fragments. Every fragment of a NAL unit has the same
size except its last, so a viewer can hand a run of them to the kernel in one segmented send
(``udp_batch_sender``). Viewers share the payloads and only write their own RTP headers.

Access unit delimiters and filler data (NAL types 9 and 12) are not sent: a receiver needs
neither, and a camera in constant-bit-rate mode can pad most of its stream with filler (the
simulated cameras pad a 2.5 Mb/s stream that carries ~0.3 Mb/s of picture).
"""

from __future__ import annotations

from edge_agent.camera_sources.h264 import NAL_AUD, nal_spans

__all__ = ["MAX_PAYLOAD", "AccessUnit", "packetize"]

#: Bytes of RTP payload per packet: with a 12-byte header, ~12 bytes of header extensions, a
#: 16-byte SRTP tag and IPv6/UDP headers this stays under a 1,400-byte path MTU (aiortc: 1,300).
MAX_PAYLOAD = 1300

NAL_FILLER = 12
NAL_STAP_A = 24
NAL_FU_A = 28
_DROPPED = frozenset({NAL_AUD, NAL_FILLER})  # WebRTC receivers need neither


class AccessUnit:
    """An Annex B access unit on the feed's 90 kHz timeline, with its RTP payloads.

    The payloads are cut the first time a viewer's sender asks for them, once for every viewer:
    a camera open with nobody sending (the idle-close delay, an evidence recording, a GOP cache
    nobody has joined from) packetizes nothing.
    """

    __slots__ = ("_keep_filler", "_max_payload", "_payloads", "data", "keyframe", "timestamp")

    def __init__(self, data: bytes, timestamp: int, keyframe: bool, *,
                 max_payload: int = MAX_PAYLOAD, keep_filler: bool = False) -> None:
        self.data = data
        self.timestamp = timestamp
        self.keyframe = keyframe
        self._max_payload = max_payload
        self._keep_filler = keep_filler
        self._payloads: tuple[bytes, ...] | None = None

    @classmethod
    def packetized(cls, data: bytes, timestamp: int, keyframe: bool,
                   max_payload: int = MAX_PAYLOAD, keep_filler: bool = False) -> AccessUnit:
        return cls(data, timestamp, keyframe, max_payload=max_payload, keep_filler=keep_filler)

    @property
    def payloads(self) -> tuple[bytes, ...]:
        """RTP payloads in order (single NAL, STAP-A, FU-A), cut on first use and kept."""
        payloads = self._payloads
        if payloads is None:
            payloads = self._payloads = packetize(self.data, self._max_payload,
                                                  self._keep_filler)
        return payloads

    def __bytes__(self) -> bytes:
        return self.data

    def __repr__(self) -> str:
        return (f"AccessUnit({len(self.data)} bytes, timestamp={self.timestamp}, "
                f"keyframe={self.keyframe})")

    @property
    def pts(self) -> int:
        """The unit's time on the feed's 90 kHz timeline (as an ``av.Packet``'s pts reads)."""
        return self.timestamp


def packetize(data: bytes, max_payload: int = MAX_PAYLOAD,
              keep_filler: bool = False) -> tuple[bytes, ...]:
    """RTP payloads (single NAL, STAP-A, FU-A) for one Annex B access unit, in order.

    ``keep_filler`` sends filler data too (only to compare with servers that forward it).
    """
    dropped = {NAL_AUD} if keep_filler else _DROPPED
    payloads: list[bytes] = []
    pending: list[bytes] = []  # small NAL units waiting to share one STAP-A packet
    pending_size = 1

    def flush() -> None:
        nonlocal pending_size
        if len(pending) == 1:
            payloads.append(pending[0])
        elif pending:
            nri = max(unit[0] & 0x60 for unit in pending)
            payloads.append(bytes([nri | NAL_STAP_A]) + b"".join(
                len(unit).to_bytes(2, "big") + unit for unit in pending))
        pending.clear()
        pending_size = 1

    for start, end in nal_spans(data):
        if start >= end or data[start] & 0x1F in dropped:
            continue  # skipped before it is copied: filler can be most of an access unit
        unit = data[start:end]
        if len(unit) > max_payload:
            flush()
            payloads.extend(_fragments(unit, max_payload))
            continue
        if pending_size + 2 + len(unit) > max_payload:
            flush()
        pending.append(unit)
        pending_size += 2 + len(unit)
    flush()
    return tuple(payloads)


def _fragments(unit: bytes, max_payload: int) -> list[bytes]:
    """FU-A fragments of one NAL unit: equal sizes, the last one shorter."""
    indicator = (unit[0] & 0xE0) | NAL_FU_A
    kind = unit[0] & 0x1F
    step = max_payload - 2
    body = memoryview(unit)[1:]
    last = len(body) - 1
    fragments = []
    for start in range(0, len(body), step):
        flags = 0x80 if start == 0 else 0
        if start + step > last:
            flags |= 0x40
        fragments.append(bytes((indicator, flags | kind)) + body[start:start + step])
    return fragments
