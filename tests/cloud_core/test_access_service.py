"""AccessService on its own: its decisions, its audit trail and each session's state sequence.

No gRPC and no broker: the stores run on an in-memory SQLite database, the audit log is a list
(``MemoryAuditLog``), and the agents are ``ScriptedAgents``, a signalling transport that answers
every offer and confirms every close in-process. The session broker and the policy are the real
ones, so what is asserted here is what the servicer and the console get.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from cloud_core.access import AccessService, Caller
from cloud_core.audit import GENESIS_HASH, AuditAction, AuditEntry, AuditLog, AuditRecord
from cloud_core.exceptions import AccessDenied, AuditError, InvalidRequest, SessionRejected
from cloud_core.grants import GrantSigner
from cloud_core.incidents import IncidentStore
from cloud_core.operators import OperatorStore
from cloud_core.policy import Policy
from cloud_core.registry import CameraUpdate, Registry
from cloud_core.sessions import SessionBroker
from cloud_core.signalling import SignallingTransport
from protos.safetynet.v1 import mqtt_pb2

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
ANSWER = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=agent\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
GANGNAM_STATION = (37.49795, 127.02760)
SAMSEONG = (37.50881, 127.06316)      # ~3.4 km east: outside a 500 m incident


# Fakes -------------------------------------------------------------------------------------------


class MemoryAuditLog(AuditLog):
    """The audit log as a list of the entries appended, in order; ``broken`` fails every append."""

    def __init__(self) -> None:
        super().__init__(Path("never-opened.sqlite"))
        self.entries: list[AuditEntry] = []
        self.broken = False

    async def append(self, entry: AuditEntry) -> AuditRecord:
        if self.broken:
            raise AuditError("the disk is full")
        self.entries.append(entry)
        return AuditRecord(seq=len(self.entries), at=datetime.now(UTC), prev_hash=GENESIS_HASH,
                           hash=GENESIS_HASH, entry=entry)

    def actions(self) -> list[str]:
        return [entry.action.value for entry in self.entries]


class ScriptedAgents(SignallingTransport):
    """Every district's agent, in-process: answers each offer, confirms each close, keeps both.
    With ``slots`` set, an agent already holding that many sessions refuses with CAPACITY, as
    a real full agent does."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, mqtt_pb2.SignalRequest]] = []
        self.slots: int | None = None
        self.open: dict[str, set[str]] = {}

    @property
    def pending(self) -> int:
        return 0

    async def request(self, district_id: str, request: mqtt_pb2.SignalRequest,
                      timeout: float) -> mqtt_pb2.SignalResponse:
        self.requests.append((district_id, request))
        held = self.open.setdefault(district_id, set())
        if request.WhichOneof("body") == "offer":
            if self.slots is not None and len(held) >= self.slots:
                refused = mqtt_pb2.SignalResponse(request_id=request.request_id,
                                                  session_id=request.offer.session_id)
                refused.error.code = mqtt_pb2.SIGNAL_ERROR_CAPACITY
                refused.error.message = f"the agent already serves {self.slots} sessions"
                return refused
            held.add(request.offer.session_id)
            return mqtt_pb2.SignalResponse(request_id=request.request_id,
                                           session_id=request.offer.session_id, sdp_answer=ANSWER)
        held.discard(request.close.session_id)
        return mqtt_pb2.SignalResponse(request_id=request.request_id,
                                       session_id=request.close.session_id, closed=True)

    def kinds(self) -> list[str]:
        return [str(request.WhichOneof("body")) for _, request in self.requests]


class Clock:
    """The service's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    access: AccessService
    audit: MemoryAuditLog
    agents: ScriptedAgents
    clock: Clock
    operators: OperatorStore

    def caller(self, operator_id: str, agency: str, role: str = "operator") -> Caller:
        operator, _ = self.operators.add(operator_id, agency=agency, role=role,
                                         policy=self.access.policy)
        return Caller(operator, "10.0.0.7")


def _camera(camera_id: str, district_id: str, at: tuple[float, float]) -> CameraUpdate:
    return CameraUpdate(camera_id=camera_id, district_id=district_id, name=camera_id, lat=at[0],
                        lon=at[1], kind="fixed", status="online", reason="", detail="",
                        viewers=0, seen_at=datetime.now(UTC))


@pytest.fixture
def world() -> Iterator[World]:
    registry = Registry(Path(":memory:"))
    now = datetime.now(UTC)
    registry.set_agent("gangnam", "Gangnam-gu", "agent-gangnam", True, "test", now)
    registry.upsert_cameras([_camera("gangnam-001", "gangnam", GANGNAM_STATION),
                             _camera("gangnam-007", "gangnam", SAMSEONG)])
    agents, audit, clock = ScriptedAgents(), MemoryAuditLog(), Clock()
    operators = OperatorStore(registry.db)
    access = AccessService(
        registry=registry, operators=operators, incidents=IncidentStore(registry.db),
        policy=Policy.default(), signer=GrantSigner(Ed25519PrivateKey.generate()), audit=audit,
        sessions=SessionBroker(registry, agents), clock=clock)
    yield World(access, audit, agents, clock, operators)
    registry.close()


async def _robbery(world: World, caller: Caller) -> str:
    report = await world.access.report_incident(
        caller, incident_type="robbery", lat=GANGNAM_STATION[0], lon=GANGNAM_STATION[1])
    return report.incident.incident.incident_id


def _phases(logs: Sequence[Mapping[str, object]], session_id: str) -> list[object]:
    return [e["new"] for e in logs if e["event"] == "session phase" and e["session"] == session_id]


# Decisions ---------------------------------------------------------------------------------------


async def test_an_incident_grant_opens_a_session_and_closing_the_incident_ends_it(world: World):
    police = world.caller("kim", "police-112")
    incident_id = await _robbery(world, police)

    with capture_logs() as logs:
        opened = await world.access.open_session(police, "gangnam-001", OFFER,
                                                 incident_id=incident_id)
        assert opened.sdp_answer == ANSWER
        assert world.access.session_state(police, opened.session_id).active
        await world.access.close_incident(police, incident_id, "suspect arrested")

    assert _phases(logs, opened.session_id) == ["offering", "open", "closing", "closed"]
    state = world.access.session_state(police, opened.session_id)
    assert (state.active, state.reason) == (False, "incident closed")
    assert world.agents.kinds() == ["offer", "close"]
    assert world.audit.actions() == ["incident.report", "access.grant", "session.open",
                                     "incident.close", "grant.revoke"]
    grant = world.audit.entries[1]
    assert (grant.incident_id, grant.camera_ids, grant.details["basis"]) == (
        incident_id, ("gangnam-001",), "incident")


async def test_a_camera_outside_the_radius_is_refused_and_nothing_reaches_the_agent(world: World):
    police = world.caller("kim", "police-112")
    incident_id = await _robbery(world, police)

    with pytest.raises(AccessDenied) as refused:
        await world.access.open_session(police, "gangnam-007", OFFER, incident_id=incident_id)

    assert refused.value.reason == (f"the camera is not within incident {incident_id}'s "
                                    f"500 m radius")
    deny = world.audit.entries[-1]
    assert deny.action is AuditAction.ACCESS_DENY
    assert deny.reason is not None and "outside its 500 m radius" in deny.reason
    assert world.agents.requests == []


async def test_an_unknown_camera_gets_the_same_answer_as_one_outside_the_grant(world: World):
    police = world.caller("kim", "police-112")
    incident_id = await _robbery(world, police)
    answers = []
    for camera_id in ("gangnam-007", "gangnam-999"):
        with pytest.raises(AccessDenied) as refused:
            await world.access.open_session(police, camera_id, OFFER, incident_id=incident_id)
        answers.append(refused.value.reason.replace(camera_id, "<camera>"))

    assert answers[0] == answers[1]
    assert world.audit.entries[-1].reason == "unknown camera"


async def test_an_agency_the_service_does_not_admit_is_refused(world: World):
    police, fire = world.caller("kim", "police-112"), world.caller("park", "fire-119")
    incident_id = await _robbery(world, police)

    with pytest.raises(AccessDenied) as refused:
        await world.access.open_session(fire, "gangnam-001", OFFER, incident_id=incident_id)

    assert refused.value.reason == f"agency fire-119 is not admitted to incident {incident_id}"
    with pytest.raises(AccessDenied) as unknown:
        await world.access.open_session(fire, "gangnam-001", OFFER, incident_id="INC-nope")
    assert unknown.value.reason == "incident INC-nope does not exist or is not yours"
    assert world.audit.entries[-1].reason == "incident INC-nope does not exist"


async def test_a_district_centre_views_its_own_cameras_without_an_incident(world: World):
    centre = world.caller("lee", "district:gangnam")
    opened = await world.access.open_session(centre, "gangnam-001", OFFER)

    assert world.audit.entries[0].details["basis"] == "district-own"
    assert world.access.session_state(centre, opened.session_id).active


async def test_without_an_audit_log_nothing_is_granted_or_relayed(world: World):
    centre = world.caller("lee", "district:gangnam")
    world.audit.broken = True

    with pytest.raises(AccessDenied) as refused:
        await world.access.open_session(centre, "gangnam-001", OFFER)

    assert refused.value.reason == ("the audit log cannot be written; access is refused until "
                                    "it can")
    assert world.agents.requests == []


# Grants ending -----------------------------------------------------------------------------------


async def test_the_sweep_ends_a_session_when_its_incident_time_box_ends(world: World):
    police = world.caller("kim", "police-112")
    incident_id = await _robbery(world, police)
    opened = await world.access.open_session(police, "gangnam-001", OFFER,
                                             incident_id=incident_id)

    assert await world.access.sweep() == []
    world.clock.now += timedelta(hours=3)
    assert await world.access.sweep() == [opened.session_id]

    state = world.access.session_state(police, opened.session_id)
    assert (state.active, state.reason) == (False, "incident time box ended")
    with pytest.raises(AccessDenied) as refused:
        await world.access.open_session(police, "gangnam-001", OFFER, incident_id=incident_id)
    assert "time box ended" in refused.value.reason


async def test_only_a_supervisor_of_the_agency_revokes_and_both_are_recorded(world: World):
    officer = world.caller("kim", "police-112")
    supervisor = world.caller("choi", "police-112", role="supervisor")
    incident_id = await _robbery(world, officer)
    opened = await world.access.open_session(officer, "gangnam-001", OFFER,
                                             incident_id=incident_id)

    with pytest.raises(AccessDenied):
        await world.access.revoke_session(officer, opened.session_id, "no")
    await world.access.revoke_session(supervisor, opened.session_id, "wrong camera")

    state = world.access.session_state(officer, opened.session_id)
    assert (state.active, state.reason) == (False, "revoked by choi: wrong camera")
    refusal, revoke = world.audit.entries[-2:]
    assert (refusal.action, refusal.outcome.value) == (AuditAction.GRANT_REVOKE, "denied")
    assert (revoke.action, revoke.operator_id) == (AuditAction.GRANT_REVOKE, "choi")


async def test_break_glass_is_a_recorded_pair_and_stopping_it_ends_its_sessions(world: World):
    supervisor = world.caller("choi", "police-112", role="supervisor")
    window = await world.access.start_break_glass(
        supervisor, camera_ids=["gangnam-001"], district_ids=[],
        reason="child missing near the station exit 4", minutes=10)
    opened = await world.access.open_session(supervisor, "gangnam-001", OFFER,
                                             breakglass_id=window.breakglass_id)

    await world.access.stop_break_glass(supervisor, window.breakglass_id)

    state = world.access.session_state(supervisor, opened.session_id)
    assert (state.active, state.reason) == (False, "break-glass stopped")
    assert world.audit.actions() == ["breakglass.start", "access.grant", "session.open",
                                     "breakglass.stop", "grant.revoke"]
    with pytest.raises(InvalidRequest) as again:
        await world.access.stop_break_glass(world.caller("kim", "police-112"),
                                            window.breakglass_id)
    assert again.value.problem == (f"break-glass {window.breakglass_id} does not exist or "
                                        f"is not yours")


# Emergency priority ------------------------------------------------------------------------------


async def test_a_break_glass_session_preempts_the_youngest_standing_session_of_a_full_agent(
        world: World):
    world.agents.slots = 2
    centre = world.caller("lee", "district:gangnam")
    older = await world.access.open_session(centre, "gangnam-001", OFFER)
    younger = await world.access.open_session(centre, "gangnam-007", OFFER)
    supervisor = world.caller("choi", "police-112", role="supervisor")
    window = await world.access.start_break_glass(
        supervisor, camera_ids=["gangnam-001"], district_ids=[],
        reason="child missing near the station exit 4", minutes=10)

    with capture_logs() as logs:
        opened = await world.access.open_session(supervisor, "gangnam-001", OFFER,
                                                 breakglass_id=window.breakglass_id)

    assert _phases(logs, opened.session_id) == ["offering", "rejected", "offering", "open"]
    assert world.agents.open["gangnam"] == {older.session_id, opened.session_id}
    state = world.access.session_state(centre, younger.session_id)
    assert not state.active
    assert state.reason.startswith(f"preempted by break-glass {window.breakglass_id}")
    assert world.access.session_state(centre, older.session_id).active
    assert world.audit.actions()[-5:] == ["breakglass.start", "access.grant", "session.preempt",
                                          "grant.revoke", "session.open"]
    preempt = world.audit.entries[-3]
    assert preempt.details["preempted_session_id"] == younger.session_id
    assert preempt.details["session_id"] == opened.session_id
    assert preempt.camera_ids == ("gangnam-001", "gangnam-007")
    assert world.access.sessions_preempted == 1


async def test_an_incident_never_preempts_another_incident_nor_a_standing_view_anything(
        world: World):
    world.agents.slots = 1
    police = world.caller("kim", "police-112")
    incident_id = await _robbery(world, police)
    first = await world.access.open_session(police, "gangnam-001", OFFER, incident_id=incident_id)
    centre = world.caller("lee", "district:gangnam")
    for caller, incident in ((police, incident_id), (centre, "")):
        with pytest.raises(SessionRejected) as refused:
            await world.access.open_session(caller, "gangnam-001", OFFER, incident_id=incident)
        assert refused.value.code == mqtt_pb2.SIGNAL_ERROR_CAPACITY
    assert world.access.session_state(police, first.session_id).active
    assert "session.preempt" not in world.audit.actions()
    assert world.agents.kinds() == ["offer", "offer", "offer"]
