"""The broker killed and restarted under live video: the video already flowing keeps flowing,
statuses converge within 15 s of each return, and no session or audit record is lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import STATUS_CONVERGES_S, broker_cycles

pytestmark = pytest.mark.media


async def test_broker_kill_cycles_during_live_video_lose_nothing(tmp_path: Path) -> None:
    figures = await broker_cycles(tmp_path, cycles=3)
    assert figures["cycles"] == 3 and figures["failures"] == 0
    assert figures["status_converged_s"]["max"] <= STATUS_CONVERGES_S
    assert figures["agent_connections"] == 4
