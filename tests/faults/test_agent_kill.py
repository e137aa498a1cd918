"""An agent process SIGKILLed while viewers watch: its district reads offline within 2 s (the
broker's last will) and the registry closes the sessions it held, reason "agent offline"."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.scenarios import AGENT_OFFLINE_S, agent_kill_cycles

pytestmark = pytest.mark.media


async def test_killed_agent_goes_offline_within_2_s_and_its_sessions_end(tmp_path: Path) -> None:
    figures = await agent_kill_cycles(tmp_path, cycles=2)
    assert figures["cycles"] == 2 and figures["sessions_closed"] == 4
    assert figures["district_offline_s"]["max"] <= AGENT_OFFLINE_S
