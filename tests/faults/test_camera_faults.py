"""A watched RTSP camera that stalls, drops its clients, or refuses and drops them: the agent
reports it offline within 5 s and the same viewer gets frames again within 10 s of its return."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.edge_agent.test_rtsp_source import needs_server
from tests.faults.scenarios import CAMERA_DETECT_S, CAMERA_RESUME_S, camera_fault_cycles

pytestmark = [pytest.mark.media, needs_server]


async def test_camera_fault_cycles_are_detected_and_recovered(tmp_path: Path) -> None:
    figures = await camera_fault_cycles(tmp_path, cycles=3)
    assert figures["cycles"] == 3
    assert (figures["stall"], figures["stop"], figures["refuse"]) == (1, 1, 1)
    for fault in ("stall", "stop", "refuse"):
        assert figures[f"{fault}_detected_s"]["max"] <= CAMERA_DETECT_S
        assert figures[f"{fault}_resumed_s"]["max"] <= CAMERA_RESUME_S
