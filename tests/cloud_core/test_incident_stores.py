"""The incident stores on each backend (``core_database``: a SQLite file, a PostgreSQL database):
incidents and their areas, break-glass windows, facilities, trails, links and external
references, dispatch, golden time, wearable subjects and evidence clips."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_core.dispatch import CAMERA, STILL, DispatchPush, DispatchStore
from cloud_core.evidence import ClipRow, ClipStore
from cloud_core.geo_area import GeoArea
from cloud_core.golden_time import FirstFrame, GoldenTimeStore
from cloud_core.incident_trail import HAND_OFF, TRAIL_KEPT, TrailStore
from cloud_core.incidents import IncidentStore
from cloud_core.policy import BreakGlass, Incident, Policy, TrailPoint
from cloud_core.storage.base import Location
from cloud_core.storage.database import Database, open_database
from cloud_core.wearables import WearableSubjects

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
GANGNAM = (37.4979, 127.0276)


@pytest.fixture
def db(core_database: Location) -> Iterator[Database]:
    database = open_database(core_database)
    yield database
    database.close()


def robbery(incident_id: str = "INC-1", *, at: datetime = T0, external_ref: str = "",
            area: GeoArea | None = None) -> Incident:
    incident = Policy.default().open_incident("robbery", *GANGNAM, None, at, at, external_ref,
                                              incident_id=incident_id)
    return replace(incident, area=area)  # as a service with declared areas would open it


def test_an_incident_round_trips_with_its_area_and_first_position(db: Database) -> None:
    store = IncidentStore(db)
    area = GeoArea((((127.02, 37.49), (127.03, 37.49), (127.03, 37.50), (127.02, 37.49)),),
                   frozenset({"gangnam"}))
    incident = robbery(external_ref="112-1", area=area)
    store.add(incident, "police-op")
    stored = store.get("INC-1")
    assert stored is not None and stored.reported_by == "police-op" and stored.close_reason == ""
    got = stored.incident
    assert (got.lat, got.lon, got.radius_m) == (incident.lat, incident.lon, incident.radius_m)
    assert (got.opened_at, got.expires_at, got.agencies) == (
        incident.opened_at, incident.expires_at, incident.agencies)
    assert got.external_ref == "112-1" and got.closed_at is None
    assert got.area is not None and got.area.district_ids == {"gangnam"}
    assert got.area.rings == area.rings
    assert got.trail == (TrailPoint(*GANGNAM, T0, "report"),)
    assert store.get("INC-unknown") is None


def test_a_second_incident_with_one_id_is_refused_and_leaves_no_trail(db: Database) -> None:
    store = IncidentStore(db)
    store.add(robbery(), "police-op")
    with pytest.raises(Exception, match="cannot store incident"):
        store.add(robbery(), "someone-else")
    stored = store.get("INC-1")
    assert stored is not None and stored.reported_by == "police-op"
    assert len(stored.incident.trail) == 1


def test_extend_and_close_change_only_an_open_incident(db: Database) -> None:
    store = IncidentStore(db)
    store.add(robbery("INC-1"), "police-op")
    store.add(robbery("INC-2", at=T0 + timedelta(minutes=1)), "police-op")
    later = T0 + timedelta(hours=5)
    assert store.extend("INC-1", later)
    assert [s.incident.incident_id for s in store.list_all(now=T0)] == ["INC-2", "INC-1"]
    assert store.close("INC-1", T0 + timedelta(minutes=5), "arrested")
    assert not store.close("INC-1", T0 + timedelta(minutes=6), "again")
    assert not store.extend("INC-1", later + timedelta(hours=1))
    stored = store.get("INC-1")
    assert stored is not None and stored.close_reason == "arrested"
    assert stored.incident.expires_at == later
    assert stored.incident.closed_at == T0 + timedelta(minutes=5)
    assert [s.incident.incident_id for s in store.list_all(now=T0)] == ["INC-2"]
    assert {s.incident.incident_id for s in store.list_all(include_closed=True)} == {
        "INC-1", "INC-2"}


def test_break_glass_windows_stop_once_and_list_by_start(db: Database) -> None:
    store = IncidentStore(db)
    for n in range(3):
        store.add_break_glass(BreakGlass(
            breakglass_id=f"BG-{n}", operator_id="police-sup", reason="fire",
            started_at=T0 + timedelta(minutes=n), expires_at=T0 + timedelta(minutes=n + 30),
            camera_ids=frozenset({"cam-1"}), district_ids=frozenset({"gangnam"})))
    assert store.stop_break_glass("BG-1", T0 + timedelta(minutes=10))
    assert not store.stop_break_glass("BG-1", T0 + timedelta(minutes=11))
    window = store.break_glass("BG-1")
    assert window is not None and window.stopped_at == T0 + timedelta(minutes=10)
    assert window.camera_ids == {"cam-1"} and window.district_ids == {"gangnam"}
    assert [w.breakglass_id for w in store.break_glass_windows(
        since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3))] == ["BG-1", "BG-2"]
    assert store.break_glass("BG-9") is None


def test_facilities_are_replaced_whole_and_found_nearest_first(db: Database,
                                                                tmp_path: Path) -> None:
    store = IncidentStore(db)
    csv = tmp_path / "facilities.csv"
    csv.write_text("facility_id,kind,name,lat,lon,detail\n"
                   "p1,parking,Near,37.4980,127.0277,\n"
                   "h1,hazardous,Far,37.5010,127.0300,LPG\n"
                   "p2,parking,Away,37.6,127.2,\n", encoding="utf-8")
    assert store.load_facilities(csv) == 3
    assert [f.facility_id for f in store.facilities_near(*GANGNAM, 1000)] == ["p1", "h1"]
    csv.write_text("facility_id,kind,name,lat,lon\np3,parking,Only,37.4979,127.0276\n",
                   encoding="utf-8")
    assert store.load_facilities(csv) == 1
    assert [f.facility_id for f in store.facilities_near(*GANGNAM, 1000)] == ["p3"]


def test_the_trail_keeps_order_and_moves_the_incident(db: Database) -> None:
    store = IncidentStore(db)
    store.add(robbery(), "police-op")
    for n in range(1, 5):
        store.trail.add_position("INC-1", TrailPoint(37.4979 + n / 1000, 127.0276,
                                                     T0 + timedelta(minutes=n), "cad"))
    trail = store.trail.positions("INC-1")
    assert [p.at for p in trail] == [T0 + timedelta(minutes=n) for n in range(5)]
    assert [p.at for p in store.trail.positions("INC-1", limit=2)] == [
        T0 + timedelta(minutes=3), T0 + timedelta(minutes=4)]
    stored = store.get("INC-1")
    assert stored is not None and stored.incident.lat == pytest.approx(37.5019)
    assert stored.incident.trail == trail  # read with the row, in one statement


def test_an_incident_carries_only_its_latest_kept_positions(db: Database) -> None:
    store = IncidentStore(db)
    store.add(robbery(), "police-op")
    for n in range(1, TRAIL_KEPT + 3):
        store.trail.add_position("INC-1", TrailPoint(37.4979, 127.0276 + n / 100_000,
                                                     T0 + timedelta(seconds=n), "cad"))
    stored = store.get("INC-1")
    assert stored is not None
    assert len(stored.incident.trail) == TRAIL_KEPT
    assert stored.incident.trail == store.trail.positions("INC-1")
    assert stored.incident.trail[-1].at == T0 + timedelta(seconds=TRAIL_KEPT + 2)


def test_links_are_kept_once_either_way_round(db: Database) -> None:
    trail = TrailStore(db)
    assert trail.add_link("INC-1", "INC-2", HAND_OFF, "to 112", T0, "sos-op")
    assert not trail.add_link("INC-1", "INC-2", HAND_OFF, "again", T0, "sos-op")
    assert not trail.add_link("INC-2", "INC-1", HAND_OFF, "back", T0, "sos-op")
    [outgoing] = trail.links("INC-1")
    [incoming] = trail.links("INC-2")
    assert (outgoing.other_id, outgoing.outgoing, outgoing.reason) == ("INC-2", True, "to 112")
    assert (incoming.other_id, incoming.outgoing, incoming.at) == ("INC-1", False, T0)


def test_an_external_reference_keeps_its_first_incident(db: Database) -> None:
    trail = TrailStore(db)
    assert trail.claim_ref("police-112", "112-7", "INC-1") == "INC-1"
    assert trail.claim_ref("police-112", "112-7", "INC-2") == "INC-1"
    assert trail.claim_ref("fire-119", "112-7", "INC-3") == "INC-3"
    assert trail.incident_for_ref("police-112", "112-7") == "INC-1"
    assert trail.incident_for_ref("police-112", "112-8") is None


def test_dispatch_assigns_once_and_keeps_stills_bytes_exactly(db: Database) -> None:
    dispatch = DispatchStore(db)
    assert dispatch.assign("INC-1", "officer-1", "police-op", T0)
    assert not dispatch.assign("INC-1", "officer-1", "police-op", T0 + timedelta(seconds=1))
    assert dispatch.assign("INC-1", "officer-2", "police-op", T0 + timedelta(seconds=2))
    assert dispatch.officers("INC-1") == ["officer-1", "officer-2"]
    assert dispatch.is_assigned("INC-1", "officer-2")
    assert dispatch.incidents_of("officer-1") == ["INC-1"]
    assert dispatch.unassign("INC-1", "officer-2") and not dispatch.unassign("INC-1", "officer-2")
    jpeg = bytes(range(256)) * 4
    still = DispatchPush("push-1", "INC-1", STILL, "cam-1", "ab" * 32, len(jpeg), T0, "police-op")
    dispatch.add_push(still, jpeg)
    hand_off = DispatchPush("push-2", "INC-1", CAMERA, "cam-2", "", 0,
                            T0 + timedelta(seconds=5), "police-op")
    dispatch.add_push(hand_off)
    assert dispatch.pushes("INC-1") == [still, hand_off]
    assert dispatch.still("push-1") == (still, jpeg)
    assert dispatch.still("push-2") is None
    assert dispatch.handed_off("INC-1", "cam-2") and not dispatch.handed_off("INC-1", "cam-1")


def test_golden_time_keeps_a_sessions_first_frame_only(db: Database) -> None:
    golden = GoldenTimeStore(db)
    first = FirstFrame("s-1", "INC-1", "112-emergency-dispatch", "cam-1", T0,
                       T0 + timedelta(seconds=2), T0 + timedelta(seconds=3), "console")
    assert golden.record(first)
    assert not golden.record(FirstFrame("s-1", "INC-1", "112-emergency-dispatch", "cam-1", T0,
                                        T0, T0 + timedelta(seconds=9), "cli"))
    assert golden.rows() == [first]
    assert golden.rows(since=T0 + timedelta(seconds=4)) == []
    [day] = golden.daily()
    assert day["report_to_first_frame_ms"] == {"p50": 3000.0, "p95": 3000.0, "max": 3000.0}


def test_a_wearable_subject_takes_its_latest_incident(db: Database) -> None:
    subjects = WearableSubjects(db)
    assert subjects.incident_of("vulnerable-support", "w-1") is None
    subjects.bind("vulnerable-support", "w-1", "child", "INC-1", T0)
    subjects.bind("vulnerable-support", "w-1", "child", "INC-2", T0 + timedelta(hours=1))
    assert subjects.incident_of("vulnerable-support", "w-1") == "INC-2"
    assert subjects.incident_of("other-carrier", "w-1") is None


def _clip(clip_id: str, incident_id: str = "INC-1", minute: int = 0) -> ClipRow:
    return ClipRow(clip_id=clip_id, camera_id="cam-1", district_id="gangnam",
                   incident_id=incident_id, operator_id="police-op", agency="police-112",
                   state="recording", started_at=(T0 + timedelta(minutes=minute)).isoformat(),
                   ended_at=None, expires_at=(T0 + timedelta(days=30)).isoformat(),
                   hold_until=None, manifest_sha256=None, agent_key_id="key-1",
                   agent_public_key="00" * 32, segments="[]", end_reason="")


def test_a_clip_moves_on_once(db: Database) -> None:
    clips = ClipStore(db)
    clips.add(_clip("clip-1"))
    clips.add(_clip("clip-2", "INC-2", minute=1))
    assert clips.transition("clip-1", ("recording",), state="sealed", manifest_sha256="ff" * 32)
    assert not clips.transition("clip-1", ("recording",), state="sealed", manifest_sha256="00")
    clips.update("clip-1", hold_until=(T0 + timedelta(days=90)).isoformat())
    sealed = clips.get("clip-1")
    assert sealed is not None and sealed.state == "sealed" and sealed.manifest_sha256 == "ff" * 32
    assert sealed.hold_until == (T0 + timedelta(days=90)).isoformat()
    assert [c.clip_id for c in clips.of_incident()] == ["clip-1", "clip-2"]
    assert [c.clip_id for c in clips.of_incident("INC-2")] == ["clip-2"]
    with pytest.raises(ValueError, match="not columns"):
        clips.update("clip-1", nonsense=1)
