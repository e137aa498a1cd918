"""An agent whose start fails late leaves nothing running: link, heartbeat and feeds are stopped."""

from __future__ import annotations

import asyncio
import threading

import pytest

from edge_agent.agent import EdgeAgent
from tests.conftest import AgentConfigFactory


def _threads() -> set[threading.Thread]:
    """Live threads, less the event loop's own default-executor workers (``asyncio_N``):
    the loop owns and reuses those (``to_thread``, name lookups) and shuts them down itself."""
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


async def test_a_failure_at_the_last_start_step_stops_what_had_started(
        agent_config: AgentConfigFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    agent = EdgeAgent(agent_config(cameras=2, grant_public_key=None))
    connected = asyncio.Event()
    online = agent.status.publish_online

    async def publish_online() -> None:
        await online()
        connected.set()

    def probes_fail() -> None:
        raise RuntimeError("the probe scheduler could not start")

    monkeypatch.setattr(agent.status, "publish_online", publish_online)
    monkeypatch.setattr(agent.prober, "start", probes_fail)
    tasks_before, threads_before = asyncio.all_tasks(), _threads()
    with pytest.raises(RuntimeError, match="probe scheduler"):
        async with agent:
            pytest.fail("the agent started although its probes did not")
    assert asyncio.all_tasks() - tasks_before == set()
    assert _threads() - threads_before == set()
    with pytest.raises(RuntimeError, match="not started"):
        _ = agent.link
    await agent.close()  # idempotent after a failed start


async def test_a_stopped_agent_leaves_no_task(agent_config: AgentConfigFactory) -> None:
    tasks_before = asyncio.all_tasks()
    async with EdgeAgent(agent_config(cameras=1, grant_public_key=None)) as agent:
        await agent.link.wait_connected(10)
        names = {t.get_name() for t in asyncio.all_tasks() - tasks_before}
        assert "heartbeat" in names and any(n.startswith("mqtt-link:") for n in names)
    assert asyncio.all_tasks() - tasks_before == set()
