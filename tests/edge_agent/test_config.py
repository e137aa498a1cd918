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
    (lambda t: t.replace("heartbeat_seconds = 30", "max_sessions = 0"),
     "agent.max_sessions must be 1..4096, got 0"),
    (lambda t: t.replace("heartbeat_seconds = 30", "max_sessions = 2.5"),
     "agent.max_sessions must be an integer, got 2.5"),
])
def test_bad_config_names_the_problem(tmp_path: Path, change, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, change(GOOD))
    assert problem in str(caught.value)
    assert str(tmp_path / "agent.toml") in str(caught.value)


def test_viewer_slots_come_from_the_config(tmp_path: Path) -> None:
    assert _load(tmp_path, GOOD).max_sessions == 256
    small = GOOD.replace("heartbeat_seconds = 30", "heartbeat_seconds = 30\nmax_sessions = 3")
    assert _load(tmp_path, small).max_sessions == 3


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        AgentConfig.from_toml(tmp_path / "nope.toml")


def test_stream_urls_stay_out_of_repr(tmp_path: Path) -> None:
    config = _load(tmp_path, GOOD.replace('source = "sim:"', 'source = "rtsp://admin:s3cret@127.0.0.1/x"', 1))
    assert "s3cret" not in repr(config)


# --- RTSP cameras: transport, transcode, [rtsp] -----------------------------------------------

RTSP = GOOD.replace('source = "sim:"', 'source = "rtsp://admin:s3cret@10.0.0.5/live"', 1)


def test_rtsp_camera_options_and_settings_load(tmp_path: Path) -> None:
    text = RTSP.replace('source = "rtsp://admin:s3cret@10.0.0.5/live"',
                        'source = "rtsp://admin:s3cret@10.0.0.5/live"\ntransport = "udp"\ntranscode = true')
    text += "\n[rtsp]\nstall_seconds = 3\nprobe_interval_seconds = 300\nprobe_concurrency = 4\n"
    config = _load(tmp_path, text)
    first = config.cameras[0]
    assert (first.kind, first.transport, first.transcode) == ("rtsp", "udp", True)
    assert (config.cameras[1].transport, config.cameras[1].transcode) == ("tcp", False)
    assert (config.rtsp.stall_seconds, config.rtsp.probe_interval_seconds,
            config.rtsp.probe_concurrency, config.rtsp.open_timeout_seconds) == (3.0, 300.0, 4, 5.0)
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda t: t.replace("/live\"", "/live\"\ntransport = \"http\"", 1), 'transport must be "tcp" or "udp"'),
    (lambda t: t.replace("/live\"", "/live\"\ntranscode = \"yes\"", 1), "transcode must be true or false"),
    (lambda t: t.replace('source = "sim:"', 'source = "sim:"\ntransport = "udp"', 1),
     "apply to rtsp:// sources only"),
    (lambda t: t + "\n[rtsp]\nstall_seconds = 6\n", "rtsp.stall_seconds must be at most 4.5"),
    (lambda t: t + "\n[rtsp]\nprobe_concurrency = 2.5\n", "rtsp.probe_concurrency must be a whole number"),
    (lambda t: t + "\n[rtsp]\nprobes_per_second = 0\n", "rtsp.probes_per_second must be positive"),
    (lambda t: t + "\n[rtsp]\nprobe_every = 5\n", "rtsp: unknown key(s) probe_every"),
    (lambda t: t.replace("admin:s3cret@10.0.0.5/live", "admin:s3cret@:99999/live", 1),
     "source names no camera host"),
])
def test_bad_rtsp_options_name_the_problem(tmp_path: Path, change, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, change(RTSP))
    assert problem in str(caught.value)
    assert "s3cret" not in str(caught.value)


def _with_status_only(tmp_path: Path, entries: object) -> str:
    import json

    (tmp_path / "extra.json").write_text(json.dumps(entries))
    return agent_config_text(GANGNAM, broker_host="127.0.0.1", broker_port=1883, source="sim:",
                             status_only_file=Path("extra.json"))


def test_status_only_cameras_are_in_the_snapshot_and_never_pulled(tmp_path: Path) -> None:
    from edge_agent.status_reporter import StatusReporter

    config = _load(tmp_path, _with_status_only(tmp_path, [
        {"id": f"gangnam-s{n}", "name": f"S{n}", "lat": 37.5, "lon": 127.05} for n in range(300)]))
    assert len(config.cameras) == 20 and len(config.status_only) == 300
    assert config.camera("gangnam-s1") is None  # no source: an offer for it is an unknown camera
    reporter = StatusReporter(config)
    assert len(reporter.camera_states()) == 320
    assert reporter.agent_status(1).camera_count == 320


@pytest.mark.parametrize(("entries", "problem"), [
    ({"id": "x"}, "a list of at most 10000 cameras"),
    ([{"id": "gangnam-s1", "name": "S", "lat": 137.5, "lon": 127.0}], "impossible position"),
    ([{"id": "gangnam-s1", "name": "S", "lat": 37.5}], "an object with id, name, lat and lon"),
    ([{"id": "gangnam-001", "name": "S", "lat": 37.5, "lon": 127.0}], "duplicate camera id 'gangnam-001'"),
    ([{"id": "Bad Id", "name": "S", "lat": 37.5, "lon": 127.0}], "is not a valid id"),
])
def test_bad_status_only_file_names_the_problem(tmp_path: Path, entries: object, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _load(tmp_path, _with_status_only(tmp_path, entries))
    assert problem in str(raised.value)
