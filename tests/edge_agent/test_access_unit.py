"""AccessUnit: its RTP payloads are cut once, when a sender first asks, and shared after."""

from __future__ import annotations

import pytest

from edge_agent import access_unit
from edge_agent.access_unit import AccessUnit
from edge_agent.camera_sources.h264 import START_CODE


def test_payloads_are_cut_on_first_use_once_for_every_viewer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cuts: list[bytes] = []
    packetize = access_unit.packetize

    def counted(data: bytes, max_payload: int, keep_filler: bool) -> tuple[bytes, ...]:
        cuts.append(data)
        return packetize(data, max_payload, keep_filler)

    monkeypatch.setattr(access_unit, "packetize", counted)
    filler = START_CODE + bytes([0x0C]) + b"\xff" * 40
    unit = AccessUnit.packetized(START_CODE + bytes([0x65]) + bytes(3000) + filler, 9000, True)
    assert cuts == []  # nothing is cut while nobody sends (a camera open with no viewer)
    first, second = unit.payloads, unit.payloads
    assert first is second and len(cuts) == 1  # the second viewer shares the first's
    assert [p[0] & 0x1F for p in first] == [28, 28, 28]  # FU-A; the filler is not sent
    assert bytes(unit) == unit.data and unit.pts == 9000 and "3050 bytes" in repr(unit)
