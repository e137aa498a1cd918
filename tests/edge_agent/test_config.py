from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from edge_agent.exceptions import ConfigError
from simulators.agent_configs import agent_config_text
from simulators.pilot_districts import GANGNAM

GOOD = agent_config_text(GANGNAM, broker_host="127.0.0.1", broker_port=1883, source="sim:")


def _load(tmp_path: Path, text: str) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return AgentConfig.from_toml(path)


def test_pilot_config_loads(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD)
    assert config.district_id == "gangnam" and len(config.cameras) == 20
    assert config.webrtc.advertise == ("127.0.0.1",)
    assert config.broker.port == 1883 and not config.broker.uses_tls


@pytest.mark.parametrize(("change", "problem"), [
    (lambda t: t.replace("lat = 37.49795", "lat = 97.5"), "lat 97.5 is out of range"),
    (lambda t: t.replace('id = "gangnam-002"', 'id = "gangnam-001"'), "duplicate camera id 'gangnam-001'"),
    (lambda t: t.replace('source = "sim:"', 'source = "http://x"', 1), "source must be sim:"),
    (lambda t: t.replace("[district]", "[distrikt]"), "unknown section(s): distrikt"),
    (lambda t: t.replace('id = "gangnam"', 'id = "Gangnam Gu"'), "is not a valid id"),
    (lambda t: t.replace("port = 1883", "port = 99999"), "broker.port must be a port number"),
    (lambda t: t.replace('advertise = ["127.0.0.1"]', 'advertise = ["not-an-ip"]'), "is not an IP address"),
    (lambda t: t + "\n[[cameras]\n", "not valid TOML"),
    (lambda t: t.replace("heartbeat_seconds = 30", "heartbeat_seconds = -1"), "must be positive"),
])
def test_bad_config_names_the_problem(tmp_path: Path, change, problem: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, change(GOOD))
    assert problem in str(caught.value)
    assert str(tmp_path / "agent.toml") in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        AgentConfig.from_toml(tmp_path / "nope.toml")


def test_stream_urls_stay_out_of_repr(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD.replace('source = "sim:"', 'source = "rtsp://admin:s3cret@127.0.0.1/x"', 1))
    assert "s3cret" not in repr(config)
