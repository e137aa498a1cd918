"""Moving, idempotent and linked incidents through AccessService, with the pilot's real camera
places (Mapo and Gangnam), scripted agents (no gRPC, no broker), an in-memory registry and the
incident and operator stores on each backend (``core_database``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core.access import AccessService, Caller
from cloud_core.exceptions import AccessDenied, IncidentNotFound, InvalidRequest, SessionNotFound
from cloud_core.grants import GrantSigner
from cloud_core.incidents import IncidentStore
from cloud_core.operators import OperatorStore
from cloud_core.policy import Policy
from cloud_core.registry import CameraUpdate, Registry
from cloud_core.sessions import SessionBroker
from cloud_core.storage.base import Location
from cloud_core.storage.database import Database, open_database
from simulators.pilot_districts import GANGNAM, MAPO
from tests.cloud_core.test_access_service import OFFER, Clock, MemoryAuditLog, ScriptedAgents

HONGIK = (MAPO.cameras[0].lat, MAPO.cameras[0].lon)          # mapo-001
GANGNAM_STATION = (GANGNAM.cameras[0].lat, GANGNAM.cameras[0].lon)  # gangnam-001


class World:
    """``database`` holds the incidents and operators (the registry's own by default)."""

    def __init__(self, database: Database | None = None) -> None:
        self.registry = Registry(Path(":memory:"))
        database = database or self.registry.db
        now = datetime.now(UTC)
        updates = []
        for district in (MAPO, GANGNAM):
            self.registry.set_agent(district.district_id, district.name, f"agent-{district}",
                                    True, "test", now)
            updates += [CameraUpdate(camera_id=c.camera_id, district_id=district.district_id,
                                     name=c.name, lat=c.lat, lon=c.lon, kind="fixed",
                                     status="online", reason="", detail="", viewers=0,
                                     seen_at=now) for c in district.cameras]
        self.registry.upsert_cameras(updates)
        self.audit, self.agents, self.clock = MemoryAuditLog(), ScriptedAgents(), Clock()
        self.operators = OperatorStore(database)
        self.access = AccessService(
            registry=self.registry, operators=self.operators,
            incidents=IncidentStore(database), policy=Policy.default(),
            signer=GrantSigner(Ed25519PrivateKey.generate()), audit=self.audit,
            sessions=SessionBroker(self.registry, self.agents), clock=self.clock)

    def caller(self, operator_id: str, agency: str, role: str = "operator") -> Caller:
        operator, _ = self.operators.add(operator_id, agency=agency, role=role,
                                         policy=self.access.policy)
        return Caller(operator, "10.0.0.9")


@pytest.fixture
def world(core_database: Location) -> Iterator[World]:
    database = open_database(core_database)
    built = World(database)
    yield built
    built.registry.close()
    database.close()


def _route(start: tuple[float, float], end: tuple[float, float],
           steps: int) -> list[tuple[float, float]]:
    return [(start[0] + (end[0] - start[0]) * i / steps, start[1] + (end[1] - start[1]) * i / steps)
            for i in range(1, steps + 1)]


async def test_a_suspect_fleeing_from_mapo_to_gangnam_keeps_the_grant_with_no_new_report(
        world: World) -> None:
    police = world.caller("kim", "police-112")
    report = await world.access.report_incident(
        police, incident_type="robbery", lat=HONGIK[0], lon=HONGIK[1], external_ref="112-7")
    incident_id = report.incident.incident.incident_id
    assert {c.district_id for c in report.cameras} == {"mapo"}
    mapo_view = await world.access.open_session(police, "mapo-001", OFFER,
                                                incident_id=incident_id)
    with pytest.raises(AccessDenied):
        await world.access.open_session(police, "gangnam-001", OFFER, incident_id=incident_id)

    for lat, lon in _route(HONGIK, GANGNAM_STATION, 5):       # ~2.3 km every 2 minutes
        world.clock.now += timedelta(minutes=2)
        moved = await world.access.move_incident(police, incident_id, lat, lon, source="cad")

    assert moved.cameras[0].camera_id == "gangnam-001"
    assert "gangnam" in {c.district_id for c in moved.cameras}
    assert "mapo-001" not in {c.camera_id for c in moved.cameras}
    opened = await world.access.open_session(police, "gangnam-001", OFFER,
                                             incident_id=incident_id)
    assert opened.camera.district_id == "gangnam"
    # The camera the suspect left behind was closed at its agent by the sweep after the move.
    ended = world.registry.session(mapo_view.session_id)
    assert ended is not None and ended["close_reason"] == "camera out of the incident's range"
    assert [i.incident.incident_id for i in world.access.list_incidents(police)] == [incident_id]
    stored = world.access.incidents.get(incident_id)
    assert stored is not None and len(stored.incident.trail) == 6
    assert world.audit.actions().count("incident.move") == 5


async def test_the_grant_reaches_the_last_positions_the_policy_names(world: World) -> None:
    police = world.caller("kim", "police-112")
    report = await world.access.report_incident(
        police, incident_type="robbery", lat=HONGIK[0], lon=HONGIK[1])
    incident_id = report.incident.incident.incident_id
    world.clock.now += timedelta(minutes=3)
    hapjeong = MAPO.cameras[1]
    moved = await world.access.move_incident(police, incident_id, hapjeong.lat, hapjeong.lon)
    # The report's position is still one of the last three: mapo-001 stays in reach.
    assert {"mapo-001", "mapo-002"} <= {c.camera_id for c in moved.cameras}
    assert moved.cameras[0].camera_id == "mapo-002"


async def test_retried_reports_with_one_external_ref_open_one_incident(world: World) -> None:
    police = world.caller("kim", "police-112")
    fire = world.caller("park", "fire-119")

    def report(caller: Caller, incident_type: str, ref: str):
        return world.access.report_incident(caller, incident_type=incident_type,
                                            lat=HONGIK[0], lon=HONGIK[1], external_ref=ref)

    retries = await asyncio.gather(*(report(police, "robbery", "112-2026-0042") for _ in range(5)))
    ids = {r.incident.incident.incident_id for r in retries}
    assert len(ids) == 1 and sorted(r.existing for r in retries) == [False] + [True] * 4
    assert world.audit.actions().count("incident.report") == 1
    other_agency = await report(fire, "fire", "112-2026-0042")
    assert other_agency.incident.incident.incident_id not in ids and not other_agency.existing
    with pytest.raises(InvalidRequest, match="already names incident"):
        await report(police, "assault", "112-2026-0042")
    with pytest.raises(InvalidRequest, match="at most 64"):
        await report(police, "robbery", "x" * 65)


async def test_bad_moves_are_refused_and_change_nothing(world: World) -> None:
    police = world.caller("kim", "police-112")
    fire = world.caller("park", "fire-119")
    report = await world.access.report_incident(
        police, incident_type="robbery", lat=HONGIK[0], lon=HONGIK[1])
    incident_id = report.incident.incident.incident_id
    before = (world.access.incidents.get(incident_id), list(world.audit.entries))
    world.clock.now += timedelta(seconds=1)
    with pytest.raises(InvalidRequest, match="latitude 91"):
        await world.access.move_incident(police, incident_id, 91.0, 127.0)
    with pytest.raises(InvalidRequest, match="faster than 252 km/h"):
        await world.access.move_incident(police, incident_id, HONGIK[0] + 0.9, HONGIK[1])
    with pytest.raises(InvalidRequest, match="in the future"):
        await world.access.move_incident(police, incident_id, *HONGIK,
                                         at=world.clock.now + timedelta(hours=1))
    with pytest.raises(InvalidRequest, match="source must be one of"):
        await world.access.move_incident(police, incident_id, *HONGIK, source="rumour")
    with pytest.raises(IncidentNotFound):
        await world.access.move_incident(police, "INC-nope", *HONGIK)
    with pytest.raises(IncidentNotFound):
        await world.access.move_incident(fire, incident_id, *HONGIK)
    assert (world.access.incidents.get(incident_id), world.audit.entries) == before


async def test_an_sos_handed_off_to_112_opens_a_linked_incident_both_agencies_see(
        world: World) -> None:
    centre = world.caller("lee", "vulnerable-support")
    police = world.caller("kim", "police-112")
    fire = world.caller("park", "fire-119")
    sos = await world.access.report_incident(
        centre, incident_type="wearable-sos", lat=HONGIK[0], lon=HONGIK[1])
    sos_id = sos.incident.incident.incident_id

    handed = await world.access.hand_off_incident(centre, sos_id, "child not answering")
    linked = handed.incident.incident
    assert linked.service == "112-emergency-video" and linked.agencies == {"police-112"}
    assert linked.incident_type == "missing-person"
    again = await world.access.hand_off_incident(centre, sos_id, "pressed twice")
    assert again.existing and again.incident.incident.incident_id == linked.incident_id
    # Both agencies see both incidents; an agency outside both sees neither.
    for caller in (centre, police):
        assert world.access.get_incident(caller, linked.incident_id)
        assert world.access.get_incident(caller, sos_id)
    with pytest.raises(IncidentNotFound):
        world.access.get_incident(fire, linked.incident_id)
    links = world.access.incident_links(sos_id)
    assert [(x.other_id, x.kind, x.outgoing) for x in links] == [
        (linked.incident_id, "hand-off", True)]

    # The wearer walks on: the 112 incident follows the SOS.
    world.clock.now += timedelta(minutes=1)
    hapjeong = MAPO.cameras[1]
    await world.access.move_incident(centre, sos_id, hapjeong.lat, hapjeong.lon, source="wearable")
    followed = world.access.incidents.get(linked.incident_id)
    assert followed is not None and (followed.incident.lat, followed.incident.lon) == (
        hapjeong.lat, hapjeong.lon)
    with pytest.raises(InvalidRequest, match="not handed off"):
        await world.access.hand_off_incident(police, linked.incident_id, "no such service")


async def test_a_radius_beyond_the_maximum_is_refused_with_the_maximum_named(
        world: World) -> None:
    police = world.caller("kim", "police-112")
    with pytest.raises(InvalidRequest, match="maximum of 2000 m"):
        await world.access.report_incident(police, incident_type="robbery", lat=HONGIK[0],
                                           lon=HONGIK[1], radius_m=5000)
    assert world.audit.actions() == []
    clamped = await world.access.report_incident(police, incident_type="robbery", lat=HONGIK[0],
                                                 lon=HONGIK[1], radius_m=5000, clamp=True)
    assert clamped.incident.incident.radius_m == 2000


async def test_golden_time_is_recorded_once_per_session_and_summarised_by_service_and_day(
        world: World) -> None:
    police = world.caller("kim", "police-112")
    other = world.caller("lee", "police-112")
    report = await world.access.report_incident(
        police, incident_type="robbery", lat=HONGIK[0], lon=HONGIK[1])
    incident_id = report.incident.incident.incident_id
    world.clock.now += timedelta(milliseconds=200)
    opened = await world.access.open_session(police, "mapo-001", OFFER, incident_id=incident_id)
    world.clock.now += timedelta(milliseconds=300)
    with pytest.raises(SessionNotFound):
        world.access.first_frame(other, opened.session_id, "cli")
    with pytest.raises(InvalidRequest, match="client must be one of"):
        world.access.first_frame(police, opened.session_id, "x" * 300)
    row = world.access.first_frame(police, opened.session_id, "console")
    assert row is not None and round(row.report_to_frame_ms) == 500
    assert world.access.first_frame(police, opened.session_id, "console") is None
    [day] = world.access.golden_time.daily()
    assert day["service"] == "112-emergency-video" and day["cameras"] == 1
    assert day["report_to_first_frame_ms"] == {"p50": 500.0, "p95": 500.0, "max": 500.0}
    assert "report_to_first_frame_ms" in world.access.golden_time.export_csv().splitlines()[0]
