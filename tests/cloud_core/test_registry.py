from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_core.policy import distance_m
from cloud_core.registry import CameraUpdate, Registry
from simulators.pilot_districts import PILOT_DISTRICTS


def _update(camera_id: str, district: str, lat: float, lon: float, status: str = "online") -> CameraUpdate:
    return CameraUpdate(camera_id, district, camera_id, lat, lon, "simulated", status, "", "", 0,
                        datetime.now(UTC))


def _pilot(registry: Registry) -> None:
    for district in PILOT_DISTRICTS:
        registry.set_agent(district.district_id, district.name, f"{district.district_id}-agent", True,
                           "test", datetime.now(UTC))
        registry.upsert_cameras(_update(c.camera_id, district.district_id, c.lat, c.lon)
                                for c in district.cameras)


def test_uses_wal(tmp_path: Path) -> None:
    Registry(tmp_path / "r.sqlite3").close()
    with sqlite3.connect(tmp_path / "r.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_near_ranks_by_distance_and_cuts_at_radius(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    _pilot(registry)
    found = registry.list_cameras(near=(37.49795, 127.02760, 2000))
    assert found[0].camera_id == "gangnam-001" and found[0].distance_m is not None
    distances = [c.distance_m for c in found if c.distance_m is not None]
    assert len(distances) == len(found)
    assert distances == sorted(distances)
    assert all(d <= 2000 for d in distances)
    assert {c.district_id for c in found} == {"gangnam"}
    assert len(registry.list_cameras(near=(37.49795, 127.02760, 2000), limit=3)) == 3


def test_filters_by_district_and_effective_status(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    _pilot(registry)
    registry.upsert_cameras([_update("mapo-002", "mapo", 37.54958, 126.91394, status="offline")])
    assert len(registry.list_cameras(district_id="mapo")) == 20
    assert [c.camera_id for c in registry.list_cameras(district_id="mapo", status="offline")] == ["mapo-002"]
    registry.set_agent("gangnam", "Gangnam-gu", "gangnam-agent", False, "test", datetime.now(UTC))
    assert registry.list_cameras(district_id="gangnam", status="online") == []
    camera = registry.camera("gangnam-001")
    assert camera is not None
    assert (camera.status, camera.effective_status, camera.effective_reason) == ("online", "offline", "agent_offline")


@settings(max_examples=60, deadline=None)
@given(lat=st.floats(37.45, 37.60), lon=st.floats(126.85, 127.12), radius=st.floats(50, 8000))
def test_rtree_query_matches_a_full_scan(tmp_path_factory, lat: float, lon: float, radius: float) -> None:
    registry = _shared_registry(tmp_path_factory)
    expected = sorted(
        (distance_m(lat, lon, c.lat, c.lon), c.camera_id)
        for c in registry.list_cameras() if distance_m(lat, lon, c.lat, c.lon) <= radius
    )
    found = [(c.distance_m, c.camera_id) for c in registry.list_cameras(near=(lat, lon, radius))]
    assert found == expected


_REGISTRY: dict[str, Registry] = {}


def _shared_registry(tmp_path_factory) -> Registry:
    if "r" not in _REGISTRY:
        registry = Registry(tmp_path_factory.mktemp("rtree") / "r.sqlite3")
        _pilot(registry)
        _REGISTRY["r"] = registry
    return _REGISTRY["r"]


def test_moving_a_camera_moves_it_in_the_spatial_index(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r.sqlite3")
    _pilot(registry)
    registry.upsert_cameras([_update("gangnam-001", "gangnam", 37.56628, 126.90193)])  # to Mapo-gu Office
    near_gangnam = {c.camera_id for c in registry.list_cameras(near=(37.49795, 127.02760, 300))}
    near_mapo = {c.camera_id for c in registry.list_cameras(near=(37.56628, 126.90193, 300))}
    assert "gangnam-001" not in near_gangnam and "gangnam-001" in near_mapo


def test_distance_is_plausible() -> None:
    # Gangnam Station to Sinsa Station is about 2.1 km.
    assert 1900 < distance_m(37.49795, 127.02760, 37.51638, 127.02012) < 2300


@settings(max_examples=40, deadline=None)
@given(lat=st.floats(37.45, 37.60), lon=st.floats(126.85, 127.12), radius=st.floats(50, 8000),
       limit=st.integers(1, 30))
def test_a_limited_near_query_is_the_nearest_of_a_full_scan(tmp_path_factory, lat: float, lon: float,
                                                            radius: float, limit: int) -> None:
    # The query widens its circle from 250 m until it holds `limit` cameras: never a farther one.
    registry = _shared_registry(tmp_path_factory)
    expected = sorted(
        (distance_m(lat, lon, c.lat, c.lon), c.camera_id)
        for c in registry.list_cameras() if distance_m(lat, lon, c.lat, c.lon) <= radius
    )[:limit]
    found = [(c.distance_m, c.camera_id)
             for c in registry.list_cameras(near=(lat, lon, radius), limit=limit)]
    assert found == expected
