"""A real ``safetynet agent`` process: its district goes offline through the broker's last will
when it is killed, and comes back when it restarts."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from cloud_core.server import CoreServer
from safetynet.broker import MosquittoBroker
from simulators.agent_configs import agent_config_text
from tests.conftest import GANGNAM, SMALL_SIM


async def _start_agent(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", "agent", "--config", str(config), "--log-level", "warning",
        stdin=asyncio.subprocess.DEVNULL,
    )


async def test_killed_agent_goes_offline_through_its_last_will(
        core: CoreServer, mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    config = tmp_path / "gangnam.toml"
    config.write_text(agent_config_text(GANGNAM, broker_host=mosquitto.host, broker_port=mosquitto.port,
                                        source=SMALL_SIM,
                                        grant_public_key=core.config.grant_public_key_path))
    agent = await _start_agent(config)
    try:
        await core.wait_until(
            lambda r: len(r.list_cameras(district_id="gangnam", status="online")) == 20, 20)
        agent.send_signal(signal.SIGKILL)
        await agent.wait()
        await core.wait_until(lambda r: not r.district("gangnam").agent_online, 10)
        # Every camera of the district now reads offline, because its agent is.
        cameras = core.registry.list_cameras(district_id="gangnam")
        assert {c.effective_status for c in cameras} == {"offline"}
        assert {c.effective_reason for c in cameras} == {"agent_offline"}
        assert core.registry.list_cameras(district_id="gangnam", status="online") == []

        agent = await _start_agent(config)
        await core.wait_until(lambda r: r.district("gangnam").agent_online, 20)
    finally:
        if agent.returncode is None:
            agent.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                await agent.wait()
    assert agent.returncode == 0
    # A clean stop says offline itself.
    await core.wait_until(lambda r: not r.district("gangnam").agent_online, 10)
