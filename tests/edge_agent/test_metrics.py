"""The agent's Prometheus metrics: read from its state at scrape time, served on loopback."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from edge_agent.config import AgentConfig
from edge_agent.metrics import AgentCollector, MetricsServer


@dataclass
class Prober:
    last_cycle_seconds: float | None = 118.5
    in_flight: int = 7
    probes_started: int = 2720
    slots_lent: int = 12


@dataclass
class Feed:
    viewers: int = 0
    streaming: bool = False


async def test_metrics_show_probe_cycle_viewers_and_cameras_by_state() -> None:
    feeds = {"gangnam-0001": Feed(2, True), "gangnam-0002": Feed()}
    states = ["online", "online", "offline"]
    collector = AgentCollector("gangnam", Prober(), feeds, lambda: states, lambda: 2)
    async with MetricsServer(collector, 0) as server, aiohttp.ClientSession() as http:
        assert server.url.startswith("http://127.0.0.1:")
        async with http.get(server.url) as response:
            assert response.status == 200
            text = await response.text()
    assert 'safetynet_agent_probe_cycle_seconds{district="gangnam"} 118.5' in text
    assert 'safetynet_agent_camera_viewers{camera="gangnam-0001",district="gangnam"} 2.0' in text
    assert 'safetynet_agent_cameras{district="gangnam",state="online"} 2.0' in text
    assert 'safetynet_agent_cameras{district="gangnam",state="offline"} 1.0' in text
    assert 'safetynet_agent_probes_started_total{district="gangnam"} 2720.0' in text
    assert 'safetynet_agent_sessions{district="gangnam"} 2.0' in text


def _config(extra: str, tmp_path: Path) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text('[district]\nid = "gangnam"\n' + extra, encoding="utf-8")
    return AgentConfig.from_toml(path)


def test_metrics_port_is_optional_and_checked(tmp_path: Path) -> None:
    assert _config("", tmp_path).metrics_port is None
    assert _config("[metrics]\nport = 9464\n", tmp_path).metrics_port == 9464
    from edge_agent.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"metrics\.port"):
        _config('[metrics]\nport = "x"\n', tmp_path)
    with pytest.raises(ConfigError, match="unknown"):
        _config("[metrics]\nhost = 1\n", tmp_path)
