"""The session broker over in-process signalling: its phases, without gRPC or a broker.

``InMemorySignalling`` carries the same protobuf messages as MQTT would, to a ``FakeAgent``;
every test asserts the whole sequence of phases the broker logs for the session.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from cloud_core.exceptions import AgentUnavailable, SessionRejected
from cloud_core.registry import CameraUpdate, Registry
from cloud_core.sessions import SessionBroker, SessionPhase
from cloud_core.signalling import FakeAgent, InMemorySignalling
from cloud_core.signalling_errors import (
    AGENT_ERROR,
    EVIDENCE_REFUSALS,
    REFUSALS,
    evidence_refusal_for,
    refusal_for,
)
from cloud_core.storage.base import Location
from edge_agent.exceptions import EvidenceRefused
from protos.safetynet.v1 import mqtt_pb2

OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


@pytest.fixture
def registry(core_database: Location) -> Iterator[Registry]:
    registry = Registry(core_database)
    now = datetime.now(UTC)
    for district in ("gangnam", "mapo"):
        registry.set_agent(district, district.title(), f"{district}-agent", True, "test", now)
        registry.upsert_cameras([CameraUpdate(f"{district}-001", district, "cam", 37.5, 127.0,
                                              "simulated", "online", "", "", 0, now)])
    yield registry
    registry.close()


@pytest.fixture
def signalling() -> InMemorySignalling:
    return InMemorySignalling()


@pytest.fixture
def agent(signalling: InMemorySignalling) -> FakeAgent:
    agent = FakeAgent()
    signalling.connect("gangnam", agent)
    return agent


@pytest.fixture
def broker(registry: Registry, signalling: InMemorySignalling) -> SessionBroker:
    return SessionBroker(registry, signalling, answer_timeout=0.2)


def _phases(logs: list[MutableMapping[str, Any]]) -> list[object]:
    return [entry["new"] for entry in logs if entry["event"] == "session phase"]


async def test_open_then_close_walks_every_phase(broker: SessionBroker, agent: FakeAgent,
                                                 registry: Registry) -> None:
    with capture_logs() as logs:
        opened = await broker.open("gangnam-001", OFFER)
        assert broker.phase(opened.session_id) is SessionPhase.OPEN
        await broker.close(opened.session_id)
    assert _phases(logs) == ["offering", "open", "closing", "closed"]
    assert opened.sdp_answer == agent.sdp_answer
    assert [r.WhichOneof("body") for r in agent.requests] == ["offer", "close"]
    assert agent.requests[0].offer.session_id == opened.session_id
    assert agent.sessions == set()
    record = registry.session(opened.session_id)
    assert record is not None and record["closed_at"] is not None
    assert broker.phase(opened.session_id) is None


async def test_a_refusal_keeps_its_code_and_reads_the_same_to_grpc_and_http(
        broker: SessionBroker, agent: FakeAgent, registry: Registry) -> None:
    agent.refuse_next(mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED, "the grant has expired")
    with capture_logs() as logs, pytest.raises(SessionRejected) as caught:
        await broker.open("gangnam-001", OFFER, session_id="ses-refused")
    assert _phases(logs) == ["offering", "rejected"]
    assert caught.value.code == mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED
    refusal = refusal_for(caught.value.code)
    assert (refusal.grpc_status, refusal.http_status, refusal.http_error) == (
        grpc.StatusCode.PERMISSION_DENIED, 403, "grant_rejected")
    assert registry.session("ses-refused") is None


async def test_a_silent_agent_is_unavailable_after_the_answer_timeout(
        broker: SessionBroker, agent: FakeAgent, signalling: InMemorySignalling) -> None:
    agent.silent = True
    with capture_logs() as logs, pytest.raises(AgentUnavailable, match=r"no answer within 0\.2 s"):
        await broker.open("gangnam-001", OFFER)
    assert _phases(logs) == ["offering", "unanswered"]
    assert signalling.pending == 0


async def test_a_district_without_its_agent_is_unavailable(broker: SessionBroker,
                                                           agent: FakeAgent) -> None:
    with capture_logs() as logs, pytest.raises(AgentUnavailable, match="'mapo'"):
        await broker.open("mapo-001", OFFER)
    assert _phases(logs) == ["offering", "unanswered"]
    assert agent.requests == []  # gangnam's agent never hears of mapo's camera


async def test_the_agent_reporting_an_end_closes_the_session(
        broker: SessionBroker, agent: FakeAgent, registry: Registry) -> None:
    with capture_logs() as logs:
        opened = await broker.open("gangnam-001", OFFER)
        event = mqtt_pb2.SessionEvent(session_id=opened.session_id, camera_id="gangnam-001",
                                      kind=mqtt_pb2.SessionEvent.KIND_ENDED, reason="viewer left")
        event.at.FromDatetime(datetime.now(UTC))
        assert broker.handle_event("mapo", event.SerializeToString()) is None  # wrong district
        assert broker.handle_event("gangnam", event.SerializeToString()) is not None
    assert _phases(logs) == ["offering", "open", "closed"]
    record = registry.session(opened.session_id)
    assert record is not None and record["close_reason"] == "viewer left"


async def test_closing_at_an_agent_that_has_gone_is_recorded_unconfirmed(
        broker: SessionBroker, agent: FakeAgent, signalling: InMemorySignalling) -> None:
    opened = await broker.open("gangnam-001", OFFER)
    signalling.disconnect("gangnam")
    with capture_logs() as logs:
        assert await broker.close_at_agent(opened.session_id, "gangnam", "revoked") is False
    assert _phases(logs) == ["closing", "closed"]
    assert [entry.get("confirmed") for entry in logs if entry["event"] == "session phase"] == [
        None, False]


async def test_an_answer_without_sdp_is_a_rejection(broker: SessionBroker, agent: FakeAgent) -> None:
    agent.sdp_answer = ""
    with capture_logs() as logs, pytest.raises(SessionRejected, match="no SDP answer") as caught:
        await broker.open("gangnam-001", OFFER)
    assert _phases(logs) == ["offering", "rejected"]
    assert refusal_for(caught.value.code) is AGENT_ERROR


def test_every_signal_error_has_one_reading() -> None:
    codes = {value for name, value in mqtt_pb2.SignalError.items()
             if value != mqtt_pb2.SIGNAL_ERROR_UNSPECIFIED}
    assert set(REFUSALS) == codes
    assert refusal_for(mqtt_pb2.SIGNAL_ERROR_UNSPECIFIED) is AGENT_ERROR
    assert refusal_for(999) is AGENT_ERROR  # type: ignore[arg-type]  # a newer agent's code


def test_every_evidence_error_the_agent_raises_has_one_reading() -> None:
    """The agent's EvidenceRefused carries the proto enum; the core reads each in one table."""
    codes = {value for name, value in mqtt_pb2.EvidenceError.items()
             if value != mqtt_pb2.EVIDENCE_ERROR_UNSPECIFIED}
    assert set(EVIDENCE_REFUSALS) == codes
    refused = EvidenceRefused(mqtt_pb2.EVIDENCE_ERROR_DISK_BUDGET, "disk budget spent")
    assert evidence_refusal_for(refused.code).http_error == "disk_budget"


async def test_a_replica_that_did_not_open_a_session_closes_it(
        core_database: Location, registry: Registry, broker: SessionBroker, agent: FakeAgent,
) -> None:
    """Two brokers on one database (two core replicas): B closes what A opened, from the
    registry's row alone; the agent's report of the end goes on the record once, not per replica."""
    other_registry = Registry(core_database)
    other_signalling = InMemorySignalling()
    other_signalling.connect("gangnam", agent)  # the same agent, through the same broker
    other = SessionBroker(other_registry, other_signalling, answer_timeout=0.2)
    opened = await broker.open("gangnam-001", OFFER)
    with capture_logs() as logs:
        await other.close(opened.session_id, "closed by viewer")
    assert _phases(logs) == ["closing", "closed"]
    assert [r.WhichOneof("body") for r in agent.requests] == ["offer", "close"]
    record = registry.session(opened.session_id)
    assert record is not None and record["close_reason"] == "closed by viewer"
    event = mqtt_pb2.SessionEvent(session_id=opened.session_id, camera_id="gangnam-001",
                                  kind=mqtt_pb2.SessionEvent.KIND_ENDED, reason="closed",
                                  bytes_sent=4096, duration_seconds=1.5)
    event.at.FromDatetime(datetime.now(UTC))
    reports = [b.handle_event("gangnam", event.SerializeToString()) for b in (broker, other)]
    assert [r is not None for r in reports] == [True, False]
    assert broker.phase(opened.session_id) is None  # the opener's phase ends with the report
    record = other_registry.session(opened.session_id)
    assert record is not None and record["bytes_sent"] == 4096
    other_registry.close()
