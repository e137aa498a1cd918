"""Pointing the pilot's agents at the simulated RTSP cameras."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from simulators.agent_configs import read_camera_urls, write_pilot_configs
from simulators.pilot_districts import PILOT_DISTRICTS
from simulators.rtsp_launcher import SimCamerasConfig, pilot_camera_ids


def test_sim_cameras_serve_the_pilot_districts_unless_told_otherwise() -> None:
    every = [c.camera_id for d in PILOT_DISTRICTS for c in d.cameras]
    assert list(SimCamerasConfig.from_args([]).camera_ids) == every
    assert SimCamerasConfig.from_args(["--district", "mapo"]).camera_ids == pilot_camera_ids("mapo")
    two = SimCamerasConfig.from_args(["--count", "2"])
    assert two.camera_ids == ("gwanak-0001", "gangnam-0001")  # the two largest shares
    assert [p.district_id for p in two.places] == ["gwanak", "gangnam"]
    assert SimCamerasConfig.from_args(["--codec", "h265", "--gop", "4"]).codec == "h265"


def test_agents_point_at_the_urls_sim_cameras_printed(tmp_path: Path) -> None:
    printed = "".join(f"{camera_id} rtsp://127.0.0.1:8554/cam/{camera_id}\n"
                      for camera_id in pilot_camera_ids("gangnam")[:3])
    sources = read_camera_urls("# from safetynet sim cameras\n\n" + printed)
    assert sources["gangnam-002"] == "rtsp://127.0.0.1:8554/cam/gangnam-002"
    paths = write_pilot_configs(tmp_path, broker_host="127.0.0.1", broker_port=1883,
                                source="sim:", sources=sources)
    gangnam = AgentConfig.from_toml(next(p for p in paths if p.stem == "gangnam"))
    assert [c.kind for c in gangnam.cameras[:4]] == ["rtsp", "rtsp", "rtsp", "simulated"]
    with pytest.raises(ValueError, match="line 1"):
        read_camera_urls("gangnam-001 http://nope\n")
