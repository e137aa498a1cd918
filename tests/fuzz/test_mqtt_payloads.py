"""Every protobuf payload on every MQTT topic, fuzzed: random bytes and mutated valid messages
into the core's status ingest and session handling, and into the agent's signal handling.

Nothing may crash; a rejected input leaves the registry as it was; an accepted one changes only
what its own district may speak for; the agent answers every well-formed request with an
answer or a named refusal, never an internal error.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from google.protobuf.message import Message
from hypothesis import assume, given
from hypothesis import strategies as st

from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from protos.topics import Kind
from simulators.pilot_districts import GANGNAM, MAPO
from tests.fuzz.harness import any_payload, counted, fuzz_settings
from tests.fuzz.rig import (
    CAMERAS,
    Rig,
    Snapshot,
    hosted_rig,
    message,
    valid_offer_request,
)

# The core is fuzzed on Mapo's topics: Gangnam's rows move with the rig's live agent (heartbeats,
# camera statuses), so they are left out of every before/after comparison; Jongno's must never
# move at all.
DISTRICT = MAPO.district_id
CAMERA = MAPO.cameras[0].camera_id
LIVE = GANGNAM.district_id
SESSION_ID = "ses-" + "f" * 32  # an open session of Gangnam's, recorded by the rig


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with hosted_rig() as rig:
        record_open_session(rig)
        yield rig


def record_open_session(rig: Rig) -> None:
    """SESSION_ID, open on Gangnam's first camera: the session events' target."""
    rig.registry.record_session(SESSION_ID, CAMERA, DISTRICT, datetime.now(UTC),
                                datetime(2100, 1, 1, tzinfo=UTC), operator_id="gangnam-op")


# --- valid seeds and structured messages ---------------------------------------------------------

def _descriptor(camera_id: str = CAMERA, district: str = DISTRICT) -> mqtt_pb2.CameraDescriptor:
    return mqtt_pb2.CameraDescriptor(camera_id=camera_id, district_id=district, name="fuzzed",
                                     lat=37.5, lon=127.0)


def _seeds(kind: Kind) -> list[bytes]:
    camera = mqtt_pb2.CameraStatus(state=mqtt_pb2.CAMERA_STATE_ONLINE, camera=_descriptor())
    if kind is Kind.AGENT_STATUS:
        messages: list[Message] = [mqtt_pb2.AgentStatus(district_id=DISTRICT, agent_id="a",
                                                       state=mqtt_pb2.AGENT_STATE_ONLINE)]
    elif kind is Kind.CAMERA_STATUS:
        messages = [camera]
    elif kind is Kind.HEARTBEAT:
        messages = [mqtt_pb2.Heartbeat(district_id=DISTRICT, cameras=[camera, camera])]
    elif kind is Kind.CAMERA_CHANGES:
        messages = [mqtt_pb2.CameraChanges(district_id=DISTRICT, cameras=[camera])]
    elif kind is Kind.SESSION_EVENTS:
        event = mqtt_pb2.SessionEvent(session_id=SESSION_ID, camera_id=CAMERA,
                                      kind=mqtt_pb2.SessionEvent.KIND_STARTED)
        messages = [event]
    else:
        messages = [mqtt_pb2.SignalResponse(request_id="r1", sdp_answer="v=0\r\n")]
    return [m.SerializeToString() for m in messages]


TEXT = st.text(max_size=24) | st.sampled_from(["", DISTRICT, LIVE, "jongno", "jongno-001", CAMERA,
                                               CAMERAS[0],
                                               "gangnam-999", "../x", "a/b", "+", "#", "x" * 300])
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([37.5, 127.0, 91.0])
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
EVENT_KINDS = st.sampled_from([mqtt_pb2.SessionEvent.KIND_ENDED,
                               mqtt_pb2.SessionEvent.KIND_STARTED]) | INT32


@st.composite
def camera_statuses(draw: st.DrawFn) -> mqtt_pb2.CameraStatus:
    return mqtt_pb2.CameraStatus(
        camera=mqtt_pb2.CameraDescriptor(camera_id=draw(TEXT), district_id=draw(TEXT),
                                         name=draw(TEXT), lat=draw(FLOATS), lon=draw(FLOATS),
                                         kind=draw(TEXT)),
        state=draw(INT32), reason=draw(INT32), detail=draw(TEXT), viewers=draw(INT32),  # type: ignore[arg-type]
        streaming=draw(st.booleans()))


@st.composite
def structured(draw: st.DrawFn, kind: Kind) -> bytes:
    """A message of the topic's own type with arbitrary field values."""
    if kind is Kind.AGENT_STATUS:
        out: Message = mqtt_pb2.AgentStatus(district_id=draw(TEXT), agent_id=draw(TEXT),
                                           district_name=draw(TEXT), state=draw(INT32),  # type: ignore[arg-type]
                                           software_version=draw(TEXT))
    elif kind is Kind.CAMERA_STATUS:
        out = draw(camera_statuses())
    elif kind is Kind.HEARTBEAT:
        out = mqtt_pb2.Heartbeat(district_id=draw(TEXT),
                                 cameras=draw(st.lists(camera_statuses(), max_size=3)))
    elif kind is Kind.CAMERA_CHANGES:
        out = mqtt_pb2.CameraChanges(district_id=draw(TEXT),
                                     cameras=draw(st.lists(camera_statuses(), max_size=3)))
    elif kind is Kind.SESSION_EVENTS:
        event = mqtt_pb2.SessionEvent(
            session_id=draw(st.sampled_from([SESSION_ID, "ses-unknown", ""])),
            camera_id=draw(TEXT), kind=draw(EVENT_KINDS), reason=draw(TEXT),  # type: ignore[arg-type]
            bytes_sent=draw(INT64), duration_seconds=draw(FLOATS))
        event.at.seconds, event.at.nanos = draw(INT64), draw(INT32)
        out = event
    else:
        out = mqtt_pb2.SignalResponse(request_id=draw(TEXT), session_id=draw(TEXT),
                                      sdp_answer=draw(TEXT))
    return out.SerializeToString()


CORE_KINDS = (Kind.AGENT_STATUS, Kind.CAMERA_STATUS, Kind.CAMERA_CHANGES, Kind.HEARTBEAT,
              Kind.SESSION_EVENTS, Kind.SIGNAL_RESPONSE)


@st.composite
def core_inputs(draw: st.DrawFn) -> tuple[Kind, str, bytes]:
    kind = draw(st.sampled_from(CORE_KINDS))
    camera = CAMERA if kind is Kind.CAMERA_STATUS else None
    topic = topics.route(kind, DISTRICT, camera).topic
    payload = draw(st.one_of(any_payload(_seeds(kind)), structured(kind)))
    return kind, topic, payload


def fuzzed_rows(rig: Rig) -> Snapshot:
    """The registry's districts, cameras and sessions, less the live agent's rows."""
    return tuple(tuple(row for row in table if LIVE not in row) for table in rig.snapshot()[:3])


def _only_own_district_changed(before: Snapshot, after: Snapshot) -> bool:
    """Rows of any district but the topic's are untouched."""
    def others(snapshot: Snapshot) -> list[tuple[object, ...]]:
        return [row for table in snapshot for row in table if DISTRICT not in row]
    return others(before) == others(after)


# --- the core --------------------------------------------------------------------------------------

def check_core_input(rig: Rig, kind: Kind, topic: str, payload: bytes) -> None:
    counted("mqtt_core")
    ingest = rig.core._ingest
    assert ingest is not None
    rejected, before = ingest.rejected, fuzzed_rows(rig)
    rig.run(rig.core._handle(message(topic, payload)))
    rig.run(ingest.drained(timeout=10))  # statuses are written by the ingest's writer thread
    after = fuzzed_rows(rig)
    if ingest.rejected > rejected:
        assert after == before, "a rejected status changed the registry"
    assert _only_own_district_changed(before, after), "Mapo's topic changed another district's rows"
    if kind is Kind.SIGNAL_RESPONSE:
        assert after == before, "a signal response nobody waits for changed the registry"
    if kind is Kind.SESSION_EVENTS and after != before:
        event = mqtt_pb2.SessionEvent.FromString(payload)
        assert event.kind == mqtt_pb2.SessionEvent.KIND_ENDED and event.session_id == SESSION_ID
    for camera in rig.registry.list_cameras():
        assert -90 <= camera.lat <= 90 and -180 <= camera.lon <= 180, camera
        assert camera.status in ("online", "offline") and camera.viewers >= 0, camera
        assert len(camera.detail) <= 500


@fuzz_settings(400)
@given(core_inputs())
def test_core_survives_any_payload_on_its_topics(rig: Rig, case: tuple[Kind, str, bytes]) -> None:
    check_core_input(rig, *case)


TOPICS = st.text(max_size=80) | st.builds(lambda k, d, c: f"safetynet/v1/districts/{d}/{k}/{c}",
                                          st.text(max_size=12), st.text(max_size=12),
                                          st.text(max_size=12))


@fuzz_settings(60)
@given(TOPICS, st.binary(max_size=64))
def test_core_ignores_unexpected_topics(rig: Rig, topic: str, payload: bytes) -> None:
    check_core_topic(rig, topic, payload)


def check_core_topic(rig: Rig, topic: str, payload: bytes) -> None:
    counted("mqtt_core_topics")
    before = fuzzed_rows(rig)
    try:
        parsed = topics.parse(topic)
    except ValueError:
        parsed = None
    try:
        delivered = message(topic, payload)
    except ValueError:  # aiomqtt's own check: no broker delivers such a topic
        assume(False)
    rig.run(rig.core._handle(delivered))
    if parsed is None:
        assert fuzzed_rows(rig) == before


# --- the agent -------------------------------------------------------------------------------------

def check_agent_request(rig: Rig, payload: bytes) -> None:
    """Through ``_on_message`` (decode, refuse) and, for a well-formed request, ``answer``."""
    counted("mqtt_agent")
    agent = rig.agent
    sessions = set(agent.sessions)
    try:
        request = mqtt_pb2.SignalRequest.FromString(payload)
        well_formed = bool(request.request_id) and request.WhichOneof("body") is not None
    except Exception:
        well_formed = False
    if not well_formed:
        rig.run(agent._on_message(message(topics.route(Kind.SIGNAL_REQUEST, LIVE).topic,
                                                payload)))
        assert set(agent.sessions) == sessions
        return
    response = rig.run(agent.answer(request))
    assert response.request_id == request.request_id
    if response.WhichOneof("result") == "error":
        assert response.error.code != mqtt_pb2.SIGNAL_ERROR_INTERNAL, response.error.message
        assert response.error.message
        if request.WhichOneof("body") == "offer":
            assert set(agent.sessions) == sessions
    elif response.WhichOneof("result") == "sdp_answer":
        assert response.sdp_answer.startswith("v=0")
        rig.run(agent.sessions[response.session_id].close("fuzz done"))
    assert set(agent.sessions) <= sessions | {response.session_id}


@st.composite
def signal_requests(draw: st.DrawFn, rig: Rig) -> bytes:
    """A request with a valid grant for a fresh session whose other fields are fuzzed."""
    request = valid_offer_request(rig, rig.offer, draw(st.sampled_from([*CAMERAS, "gangnam-999"])))
    offer = request.offer
    field = draw(st.sampled_from(("expires_at", "camera_id", "session_id", "grant", "request_id",
                                  "none")))
    if field == "expires_at":
        offer.expires_at.seconds, offer.expires_at.nanos = draw(INT64), draw(INT32)
    elif field == "camera_id":
        offer.camera_id = draw(TEXT)
    elif field == "session_id":
        offer.session_id = draw(TEXT)
    elif field == "grant":
        offer.grant = draw(any_payload([rig.seed_grant]))
    elif field == "request_id":
        request.request_id = draw(TEXT)
    return request.SerializeToString()


@fuzz_settings(120)
@given(st.data())
def test_agent_answers_any_signal_payload_without_internal_errors(rig: Rig, data: st.DataObject) -> None:
    check_agent_request(rig, data.draw(signal_payloads(rig)))


def signal_payloads(rig: Rig) -> st.SearchStrategy[bytes]:
    return st.one_of(any_payload(rig.signal_seeds), signal_requests(rig))


@pytest.mark.parametrize(("seconds", "nanos"), [(1_796_000_000, -4497), (2**62, 0)])
def test_grant_checked_offer_with_an_invalid_expiry_is_refused_as_bad_offer(
        rig: Rig, seconds: int, nanos: int) -> None:
    """Found by the fuzzer: an offer's (unsigned) expires_at outside Timestamp's range, behind a
    valid grant, made the agent fail internally ("Nanos -4497 must be in a range")."""
    request = valid_offer_request(rig, rig.offer)
    request.offer.expires_at.seconds, request.offer.expires_at.nanos = seconds, nanos
    response = rig.run(rig.agent.answer(request))
    assert response.error.code == mqtt_pb2.SIGNAL_ERROR_BAD_OFFER
    assert "expires_at" in response.error.message
    assert request.offer.session_id not in rig.agent.sessions


def test_session_event_with_an_invalid_time_is_rejected_and_changes_nothing(rig: Rig) -> None:
    """Found by the fuzzer: an ended event whose ``at`` is outside Timestamp's range (nanos
    -541098243) raised out of the core's message handler."""
    event = mqtt_pb2.SessionEvent(session_id=SESSION_ID, camera_id=CAMERA,
                                  kind=mqtt_pb2.SessionEvent.KIND_ENDED, reason="viewer left")
    event.at.nanos = -541098243
    before = fuzzed_rows(rig)
    topic = topics.route(Kind.SESSION_EVENTS, DISTRICT).topic
    rig.run(rig.core._handle(message(topic, event.SerializeToString())))
    assert fuzzed_rows(rig) == before


def test_a_district_cannot_take_over_another_districts_camera(rig: Rig) -> None:
    """Found by the fuzzer: a Mapo heartbeat naming Jongno's camera (with district "mapo")
    moved that camera into Mapo; a district may only speak for its own cameras."""
    status = mqtt_pb2.CameraStatus(state=mqtt_pb2.CAMERA_STATE_OFFLINE,
                                   camera=_descriptor("jongno-001"))
    beat = mqtt_pb2.Heartbeat(district_id=DISTRICT, cameras=[status])
    before = rig.registry.camera("jongno-001")
    for topic, payload in ((topics.route(Kind.HEARTBEAT, DISTRICT).topic, beat),
                           (topics.camera_status(DISTRICT, "jongno-001"), status)):
        rig.run(rig.core._handle(message(topic, payload.SerializeToString())))
        after = rig.registry.camera("jongno-001")
        assert after is not None and before is not None
        assert (after.district_id, after.status) == ("jongno", before.status)
