"""The registry on both backends (``core_database``: SQLite and PostgreSQL)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_core.policy import distance_m
from cloud_core.registry import CameraUpdate, Registry
from cloud_core.storage.base import Location
from safetynet.postgres_server import ThrowawayPostgres
from simulators.pilot_districts import PILOT_DISTRICTS
from tests.conftest import BACKENDS


def _update(camera_id: str, district: str, lat: float, lon: float, status: str = "online",
            changed_at: datetime | None = None) -> CameraUpdate:
    return CameraUpdate(camera_id, district, camera_id, lat, lon, "simulated", status, "", "", 0,
                        datetime.now(UTC), changed_at)


@pytest.fixture
def registry(core_database: Location) -> Iterator[Registry]:
    opened = Registry(core_database)
    yield opened
    opened.close()


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


def test_near_ranks_by_distance_and_cuts_at_radius(registry: Registry) -> None:
    _pilot(registry)
    found = registry.list_cameras(near=(37.49795, 127.02760, 2000))
    assert found[0].camera_id == "gangnam-001" and found[0].distance_m is not None
    distances = [c.distance_m for c in found if c.distance_m is not None]
    assert len(distances) == len(found)
    assert distances == sorted(distances)
    assert all(d <= 2000 for d in distances)
    assert {c.district_id for c in found} == {"gangnam"}
    assert len(registry.list_cameras(near=(37.49795, 127.02760, 2000), limit=3)) == 3


def test_filters_by_district_and_effective_status(registry: Registry) -> None:
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
def test_rtree_query_matches_a_full_scan(shared_registry: Registry, lat: float, lon: float,
                                         radius: float) -> None:
    registry = shared_registry
    expected = sorted(
        (distance_m(lat, lon, c.lat, c.lon), c.camera_id)
        for c in registry.list_cameras() if distance_m(lat, lon, c.lat, c.lon) <= radius
    )
    found = [(c.distance_m, c.camera_id) for c in registry.list_cameras(near=(lat, lon, radius))]
    assert found == expected


@pytest.fixture(scope="module", params=BACKENDS)
def shared_registry(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The pilot's cameras, once per module and backend, for the property tests' many queries."""
    location: Location
    if request.param == "postgres":
        postgres: ThrowawayPostgres = request.getfixturevalue("postgres")
        location = postgres.create_database("test_registry_shared")
    else:
        location = tmp_path_factory.mktemp("rtree") / "r.sqlite3"
    registry = Registry(location)
    _pilot(registry)
    yield registry
    registry.close()


def test_moving_a_camera_moves_it_in_the_spatial_index(registry: Registry) -> None:
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
def test_a_limited_near_query_is_the_nearest_of_a_full_scan(shared_registry: Registry, lat: float,
                                                            lon: float, radius: float,
                                                            limit: int) -> None:
    # The query widens its circle from 250 m until it holds `limit` cameras: never a farther one.
    registry = shared_registry
    expected = sorted(
        (distance_m(lat, lon, c.lat, c.lon), c.camera_id)
        for c in registry.list_cameras() if distance_m(lat, lon, c.lat, c.lon) <= radius
    )[:limit]
    found = [(c.distance_m, c.camera_id)
             for c in registry.list_cameras(near=(lat, lon, radius), limit=limit)]
    assert found == expected


def test_an_older_status_loses_to_the_stored_one_whoever_writes_it(core_database: Location) -> None:
    """Two replicas write the same camera: the newest changed_at stands, in SQL, whatever order
    their batches commit in; an undated status is applied as it comes."""
    first, second = Registry(core_database), Registry(core_database)
    at = datetime(2026, 12, 1, 9, tzinfo=UTC)
    first.upsert_cameras([_update("gangnam-001", "gangnam", 37.5, 127.0, "offline",
                                  changed_at=at + timedelta(seconds=20))])
    version = first.camera_version()
    second.upsert_cameras([_update("gangnam-001", "gangnam", 37.5, 127.0, "online",
                                   changed_at=at + timedelta(seconds=10))])
    camera = second.camera("gangnam-001")
    assert camera is not None and camera.status == "offline"
    assert second.camera_version() == version  # nothing shown changed: no new version
    second.upsert_cameras([_update("gangnam-001", "gangnam", 37.5, 127.0, "online",
                                   changed_at=at + timedelta(seconds=30))])
    first.upsert_cameras([_update("gangnam-001", "gangnam", 37.5, 127.0, "offline")])
    camera = first.camera("gangnam-001")
    assert camera is not None and camera.status == "offline"
    assert first.camera_version() == version + 2
    second.close()
    first.close()


def test_versions_of_two_writers_never_collide(core_database: Location) -> None:
    """Each batch that changed something has a version of its own, in commit order."""
    import threading

    writers = [Registry(core_database) for _ in range(2)]
    versions: list[list[int]] = [[], []]

    def write(n: int) -> None:
        for i in range(20):
            camera = f"gangnam-{n}{i:03d}"
            writers[n].upsert_cameras([_update(camera, "gangnam", 37.5, 127.0)])
            versions[n].append(writers[n].camera_version())

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = writers[0]
    assert reader.camera_version() == 40
    changed = reader.changes_between(0, 40, 100)
    assert changed is not None and len(changed) == 40
    for after in range(40):  # every version holds exactly the one camera its batch wrote
        one = reader.changes_between(after, after + 1, 10)
        assert one is not None and len(one) == 1
    for writer in writers:
        writer.close()


def test_sessions_keep_their_relay_and_the_end_report_is_taken_once(registry: Registry) -> None:
    now = datetime.now(UTC)
    registry.record_session("ses-1", "gangnam-001", "gangnam", now, now, relay_id="relay-1")
    registry.record_session("ses-2", "gangnam-001", "gangnam", now, now)
    assert [s["relay_id"] for s in registry.open_sessions()] == ["relay-1", ""]
    assert registry.end_session("ses-1", now, "closed by viewer")
    assert not registry.end_session("ses-1", now, "expired")  # the first reason wins
    assert registry.take_end_report("ses-1", now, 1000, 2.5)
    assert not registry.take_end_report("ses-1", now, 9999, 9.0)
    session = registry.session("ses-1")
    assert session is not None
    assert (session["close_reason"], session["bytes_sent"], session["duration_seconds"]) == \
        ("closed by viewer", 1000, 2.5)
    assert registry.count_open_sessions() == 1


def test_a_session_is_closed_only_by_its_operator_or_a_supervisor_of_its_agency(
        registry: Registry) -> None:
    now = datetime.now(UTC)
    for session_id in ("ses-1", "ses-2", "ses-3"):
        registry.record_session(session_id, "gangnam-001", "gangnam", now, now + timedelta(minutes=5),
                                operator_id="kim", agency="police-112", relay_id="relay-1")
    # Another operator, even of the same agency, closes none of kim's; nor does anyone when the
    # agency named is another's.
    assert registry.close_session("ses-1", now, "x", operator_id="lee", agency=None) is None
    assert registry.close_session("ses-1", now, "x", operator_id="park", agency="fire-119") is None
    still = registry.session("ses-1")
    assert still is not None and still["closed_at"] is None
    closed = registry.close_session("ses-1", now, "closed by viewer", operator_id="kim")
    assert closed is not None
    assert (closed["district_id"], closed["relay_id"], closed["close_reason"]) == (
        "gangnam", "relay-1", "closed by viewer")
    assert registry.close_session("ses-1", now, "again", operator_id="kim") is None  # once
    assert registry.close_session("ses-2", now, "by supervisor", operator_id="choi",
                                  agency="police-112") is not None
    assert registry.close_session("ses-3", now, "swept") is not None  # no owner asked: any
    assert registry.close_session("ses-9", now, "unknown") is None
    assert registry.count_open_sessions() == 0
