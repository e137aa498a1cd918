"""The red-team pass of issue 12, repeated against the core (findings 3 to 7; finding 1 is
tests/cloud_core/test_audit_witness.py). Each test is one attack and what it now gets."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import stat
from datetime import UTC, datetime

import aiohttp
import aiomqtt
import grpc
import pytest

from cloud_core.audit import export
from cloud_core.server import CoreServer
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from provisioning.demo_broker import DemoBrokerAccess
from safetynet.broker import MosquittoBroker, free_port


def _auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def _console(core: CoreServer) -> str:
    assert core.console is not None
    return core.console.url


async def test_3_oversize_and_formula_fields_are_refused_or_escaped(
        core: CoreServer, tokens: dict[str, str]) -> None:
    police = _auth(tokens["police-op"])
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.IncidentServiceStub(channel)
        report = core_pb2.ReportIncidentRequest(
            incident_type="robbery", location=core_pb2.GeoPoint(lat=37.4979, lon=127.0276),
            legal_basis="x" * 1_000_000)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Report(report, metadata=police)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "legal_basis is 1000000 characters long; at most 1000" in str(refused.value.details())
        report.legal_basis = "@SUM(1+1)*cmd|' /C calc'!A0"
        await stub.Report(report, metadata=police)
    assert core.audit is not None
    text = await asyncio.to_thread(export, core.audit.db_path)
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert "'@SUM(1+1)*cmd|' /C calc'!A0" in cells
    assert not any(cell.startswith(("=", "+", "@")) for cell in cells)


async def test_5_failed_sign_ins_are_throttled_and_recorded(
        core: CoreServer, tokens: dict[str, str]) -> None:
    assert core.access is not None
    codes: list[grpc.StatusCode] = []
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.IncidentServiceStub(channel)
        for n in range(40):
            try:
                await stub.List(core_pb2.ListIncidentsRequest(), metadata=_auth(f"snt_wrong{n}"))
            except grpc.aio.AioRpcError as exc:
                codes.append(exc.code())
        assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == 5  # then it must wait
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 35
    async with aiohttp.ClientSession(_console(core)) as http:
        async with http.get("/api/me", headers={"Authorization": "Bearer snt_wrong"}) as response:
            assert response.status == 429 and "Retry-After" in response.headers
    assert core.access.sign_in.failures_total >= 5
    assert core.access.sign_in.throttled_total >= 35
    await core.access.sweep()
    assert core.audit is not None
    records = await core.audit.search(action="auth.fail")
    assert len(records) == 1 and records[0].entry.details["failures"] >= 40


async def test_6_bad_input_gets_a_structured_error(
        core: CoreServer, tokens: dict[str, str]) -> None:
    police = _auth(tokens["police-op"])
    async with grpc.aio.insecure_channel(core.address) as channel:
        incidents = core_pb2_grpc.IncidentServiceStub(channel)
        old = core_pb2.ReportIncidentRequest(
            incident_type="robbery", location=core_pb2.GeoPoint(lat=37.4979, lon=127.0276))
        old.occurred_at.FromDatetime(datetime(1970, 1, 1, tzinfo=UTC))
        bad_stamp = core_pb2.ReportIncidentRequest(
            incident_type="robbery", location=core_pb2.GeoPoint(lat=37.4979, lon=127.0276))
        bad_stamp.occurred_at.seconds = 10**15
        long_ref = core_pb2.ReportIncidentRequest(
            incident_type="robbery", location=core_pb2.GeoPoint(lat=37.4979, lon=127.0276),
            external_ref="r" * 10_000)
        sessions = core_pb2_grpc.SessionServiceStub(channel)
        for call, request, needle in (
                (incidents.Report, old, "outside the accepted window"),
                (incidents.Report, bad_stamp, "not a valid time"),
                (incidents.Report, long_ref, "external_ref is 10000 characters"),
                (sessions.CloseSession, core_pb2.CloseSessionRequest(session_id="a\nb"),
                 "session_id may contain only")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(request, metadata=police)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, needle
            assert needle in str(refused.value.details())
            assert "<class" not in str(refused.value.details())
    headers = {"Authorization": f"Bearer {tokens['police-op']}",
               "Content-Type": "application/json"}
    async with aiohttp.ClientSession(_console(core)) as http:
        for body in ('{"incident_type": "robbery", "lat": ' + "9" * 5000 + ', "lon": 127}',
                     "[" * 100_000 + "]" * 100_000):
            async with http.post("/api/incidents", data=body, headers=headers) as response:
                assert response.status == 400
                assert (await response.json())["error"] == "invalid_request"


async def test_4_broker_loss_shows_cameras_unknown_and_agent_loss_closes_sessions(
        core: CoreServer, mosquitto: MosquittoBroker) -> None:
    assert core.registry is not None and core.access is not None
    registry = core.registry
    now = datetime.now(UTC)
    registry.set_agent("gangnam", "Gangnam", "gangnam-agent", True, "test", now)
    for n in range(10):
        registry.record_session(f"ses-{n}", "gangnam-001", "gangnam", now, now,
                                operator_id="op", agency="district:gangnam", basis="standing")
    registry.set_agent("gangnam", "Gangnam", "gangnam-agent", False, "test", now)
    await core.access.agent_status_changed("gangnam")
    assert not [s for s in registry.open_sessions() if s["district_id"] == "gangnam"]

    await mosquitto.stop(kill=True)
    async with asyncio.timeout(10):
        while core.link.connected.is_set():
            await asyncio.sleep(0.05)
    core._note_broker_reachability()  # what the sweeper does every second
    assert not registry.broker_reachable


async def test_7_the_demo_broker_refuses_anonymous_and_out_of_district_clients(
        tmp_path: os.PathLike[str]) -> None:
    from pathlib import Path

    work = Path(tmp_path)
    access = DemoBrokerAccess.generate(["gangnam", "mapo"])
    port = free_port()
    config = access.mosquitto_config(work, host="127.0.0.1", port=port)
    assert stat.S_IMODE((work / "passwd").stat().st_mode) == 0o600
    async with MosquittoBroker(port=port, config=config, work_dir=work):
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client("127.0.0.1", port, identifier="intruder"):
                pass
        core_user = access.core_user
        forged = mqtt_pb2.AgentStatus(district_id="gangnam", state=mqtt_pb2.AGENT_STATE_OFFLINE)
        async with aiomqtt.Client("127.0.0.1", port, identifier="watch", username=core_user,
                                  password=access.passwords[core_user]) as watcher:
            await watcher.subscribe(topics.agent_status("+"), qos=1)
            mapo = "agent-mapo"
            async with aiomqtt.Client("127.0.0.1", port, identifier="mapo", username=mapo,
                                      password=access.passwords[mapo]) as intruder:
                await intruder.publish(topics.agent_status("gangnam"), forged.SerializeToString(),
                                       qos=1, retain=True)  # another district's topic: dropped
                await intruder.publish(topics.agent_status("mapo"), b"own", qos=1)
            async with asyncio.timeout(5):
                message = await anext(aiter(watcher.messages))
            assert str(message.topic) == topics.agent_status("mapo")


async def test_2_one_operator_cannot_fill_a_district_with_standing_sessions(
        core: CoreServer, tokens: dict[str, str]) -> None:
    from cloud_core.session_capacity import SessionCaps, capacity_refusal

    assert core.access is not None
    rows = [{"operator_id": "gangnam-op", "agency": "district:gangnam", "district_id": "gangnam",
             "basis": "district-own"} for _ in range(16)]
    refusal = capacity_refusal(rows, operator_id="gangnam-op", agency="district:gangnam",
                               district_id="gangnam", standing=True, caps=SessionCaps())
    assert refusal is not None and "at most 16" in refusal
    crowd = [{**row, "operator_id": f"op-{n}"} for n, row in enumerate(rows * 4)]
    assert "standing-access" in (capacity_refusal(
        crowd, operator_id="x", agency="district:gangnam", district_id="gangnam", standing=True,
        caps=SessionCaps()) or "")
    assert capacity_refusal(crowd, operator_id="police-op", agency="police-112",
                            district_id="gangnam", standing=False, caps=SessionCaps()) is None
