"""Just enough of H.264's Annex B byte stream to pass a camera's access units through.

A WebRTC viewer can only start decoding at a key frame that it can decode on its own, which means
the sequence and picture parameter sets (SPS, PPS) must reach it in band, just before the IDR
slice. Many cameras repeat them before every key frame; many others announce them once, in the
SDP (``sprop-parameter-sets``), which FFmpeg turns into the stream's extradata. ``ParameterSets``
remembers the latest ones from either place and puts them in front of a key frame that lacks them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

START_CODE = b"\x00\x00\x00\x01"

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9


def nal_spans(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of each NAL unit of an Annex B buffer, start codes excluded; no copies."""
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        start += 3
        end = data.find(b"\x00\x00\x01", start)
        if end == -1:
            yield start, len(data)
            return
        # A 4-byte start code's leading zero belongs to it, not to the unit before.
        yield start, end - 1 if data[end - 1] == 0 else end
        start = end


def nal_units(data: bytes) -> Iterator[bytes]:
    """The NAL units of an Annex B buffer, without their start codes."""
    for start, end in nal_spans(data):
        yield data[start:end]


#: A start code followed by an SPS or PPS header byte (any nal_ref_idc).
_PARAMETER_SET = re.compile(b"\x00\x00\x01[\x07\x27\x47\x67\x08\x28\x48\x68]")


def nal_type(unit: bytes) -> int:
    return unit[0] & 0x1F if unit else 0


def is_annex_b(data: bytes) -> bool:
    return data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01"))


def annex_b_from_avcc(extradata: bytes) -> bytes:
    """SPS and PPS of an ``avcC`` record (ISO/IEC 14496-15) as Annex B; b"" if malformed."""
    if len(extradata) < 7 or extradata[0] != 1:
        return b""
    out = bytearray()
    pos = 5
    for count_mask in (0x1F, 0xFF):  # the SPS count is 5 bits, the PPS count a whole byte
        if pos >= len(extradata):
            return b""
        count = extradata[pos] & count_mask
        pos += 1
        for _ in range(count):
            length = int.from_bytes(extradata[pos:pos + 2], "big")
            unit = extradata[pos + 2:pos + 2 + length]
            if length == 0 or len(unit) != length:
                return b""
            out += START_CODE + unit
            pos += 2 + length
    return bytes(out)


class ParameterSets:
    """The stream's latest SPS and PPS; puts them before key frames that do not carry them."""

    def __init__(self, extradata: bytes | None = None) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        if extradata:
            self.learn(extradata if is_annex_b(extradata) else annex_b_from_avcc(extradata))

    def learn(self, data: bytes) -> tuple[bool, bool]:
        """Remember the SPS/PPS found in ``data``; return whether it had each."""
        has_sps = has_pps = False
        if _PARAMETER_SET.search(data) is None:
            return False, False  # most access units: no need to walk (and copy) their units
        for unit in nal_units(data):
            kind = nal_type(unit)
            if kind == NAL_SPS:
                self.sps, has_sps = unit, True
            elif kind == NAL_PPS:
                self.pps, has_pps = unit, True
        return has_sps, has_pps

    def complete(self, data: bytes, keyframe: bool) -> bytes:
        """``data`` with SPS/PPS in band if it is a key frame; learns from every access unit."""
        has_sps, has_pps = self.learn(data)
        if not keyframe or (has_sps and has_pps):
            return data
        prefix = b""
        if not has_sps and self.sps is not None:
            prefix += START_CODE + self.sps
        if not has_pps and self.pps is not None:
            prefix += START_CODE + self.pps
        return prefix + data if prefix else data
