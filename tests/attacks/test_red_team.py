"""The red-team pass of issue 12, repeated against the core (findings 2 to 7; finding 1 is
tests/cloud_core/test_audit_witness.py). Each test is one attack and what it now gets; the
table of results is in docs/access-control.md ("The doors under attack")."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiomqtt
import grpc
import pytest

import cloud_core
from cloud_core import audit as audit_log
from cloud_core.audit import export
from cloud_core.config import CoreConfig
from cloud_core.registry import CameraUpdate
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from provisioning.demo_broker import DemoBrokerAccess
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker, free_port
from tests.conftest import GANGNAM, AgentConfigFactory
from viewer.client import CameraViewer, ViewError


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


async def test_5_failed_sign_ins_naming_an_operator_are_throttled_from_any_address(
        core: CoreServer, tokens: dict[str, str]) -> None:
    """A guesser spread over 40 addresses, each failing once in police-op's name (the token
    names its operator), is slowed down as one; the 112 room's own address is not locked out."""
    from cloud_core.exceptions import SignInThrottled, Unauthenticated

    access = core.access
    assert access is not None
    real = tokens["police-op"]
    assert real.startswith("snt_police-op.")
    async with grpc.aio.insecure_channel(core.address) as channel:   # the room signs in
        await core_pb2_grpc.IncidentServiceStub(channel).List(
            core_pb2.ListIncidentsRequest(), metadata=_auth(real))
    outcomes: list[str] = []
    for n in range(40):  # what the servicer does with each caller's peer address
        try:
            access.authenticate(f"snt_police-op.guess{n}", f"ipv4:198.51.100.{n}:40000")
        except Unauthenticated:
            outcomes.append("unauthenticated")
        except SignInThrottled as exc:
            assert exc.per == "operator" and "naming this operator" in exc.reason
            outcomes.append("throttled")
    assert outcomes[:10] == ["unauthenticated"] * 10 and outcomes.count("throttled") == 30
    with pytest.raises(SignInThrottled):   # even the right token, from an unknown address
        access.authenticate(real, "ipv4:203.0.113.7:40000")
    async with grpc.aio.insecure_channel(core.address) as channel:   # the room: at once
        await core_pb2_grpc.IncidentServiceStub(channel).List(
            core_pb2.ListIncidentsRequest(), metadata=_auth(real))
    assert access.sign_in.failures == {"source": 10, "operator": 10}
    async with aiohttp.ClientSession(_console(core)) as http, http.get("/metrics") as response:
        metrics = await response.text()
    assert 'safetynet_core_sign_in_failures_total{key="operator"} 10.0' in metrics
    assert 'safetynet_core_sign_in_throttled_total{key="operator"} 31.0' in metrics
    await access.sweep()
    assert core.audit is not None
    records = [r.entry for r in await core.audit.search(action="auth.fail")]
    by_operator = [e for e in records if e.details["key"] == "operator"]
    assert [(e.operator_id, e.details["failures"]) for e in by_operator] == [("police-op", 41)]
    assert len(records) <= 41   # one per key and minute, never one per attempt


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
    registry.upsert_cameras([CameraUpdate("gangnam-001", "gangnam", "Gangnam 1", 37.5, 127.03,
                                          "simulated", "online", "", "", 0, now)])
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
    assert core.feed is not None
    before, (seq, _, _) = core.feed.version, core.feed.start(0)
    core._note_broker_reachability()  # what the sweeper does every second
    assert not registry.broker_reachable
    camera = registry.camera("gangnam-001")
    assert camera is not None and camera.effective_status == "unknown"
    # The consoles' map too: a change pushed for every camera, each one shown unknown.
    async with asyncio.timeout(5):
        while core.feed.version == before:
            seq = (await core.feed.next_events(seq))[-1].seq
    _, rows = registry.snapshot_rows()
    assert rows and {row[5] for row in rows} == {"unknown"}


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


@pytest.mark.media
async def test_2_a_full_agent_gives_a_standing_slot_to_a_police_incident_within_1_s(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory) -> None:
    """Finding 2 repeated: the district operator takes every viewer slot of its agent (here 3,
    from the agent's config) with standing-access sessions; a police incident view then
    preempts the youngest of them and shows its first frame within the golden-time budget."""
    async with EdgeAgent(agent_config(GANGNAM, cameras=3, max_sessions=3)) as agent:
        await core.wait_until(lambda r: len(r.list_cameras(district_id="gangnam",
                                                           status="online")) == 3, 10)
        standing = [CameraViewer(core.address, camera, webrtc=WebRtcSettings.loopback(),
                                 token=tokens["gangnam-op"])
                    for camera in ("gangnam-001", "gangnam-002", "gangnam-003")]
        police: CameraViewer | None = None
        try:
            for viewer in standing:
                await viewer.open()
                await viewer.wait_frames(1, timeout=10)
            assert len(agent.sessions) == 3
            youngest = standing[-1]
            async with grpc.aio.insecure_channel(core.address) as channel:
                report = await core_pb2_grpc.IncidentServiceStub(channel).Report(
                    core_pb2.ReportIncidentRequest(
                        incident_type="robbery", external_ref="112-2026-preempt",
                        location=core_pb2.GeoPoint(lat=37.49795, lon=127.02760)),
                    metadata=_auth(tokens["police-op"]))
            incident_id = report.incident.incident_id
            police = CameraViewer(core.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                                  token=tokens["police-op"], incident_id=incident_id)
            await police.open()
            await police.wait_frames(1, timeout=5)
            assert police.report.open_session_ms is not None
            assert police.report.time_to_first_frame_ms is not None
            assert police.report.time_to_first_frame_ms <= 1000, police.report
            async with asyncio.timeout(5):
                await youngest.ended.wait()
            assert youngest.report.ended_reason.startswith(f"preempted by incident {incident_id}")
            assert police.report.session_id in youngest.report.ended_reason
            assert not any(v.ended.is_set() for v in standing[:-1])
            async with aiohttp.ClientSession(_console(core)) as http, http.get(  # a tile's poll
                    f"/api/sessions/{youngest.report.session_id}",
                    headers={"Authorization": f"Bearer {tokens['gangnam-op']}"}) as response:
                state = await response.json()
            assert (state["active"], state["reason"]) == (False, youngest.report.ended_reason)
            assert set(agent.sessions) == {*(v.report.session_id for v in standing[:-1]),
                                           police.report.session_id}
        finally:
            for viewer in [*standing, *([police] if police else [])]:
                await viewer.close()
    database = core.config.audit_database
    preempt = audit_log.search(database, action="session.preempt", limit=5)
    assert [r.entry.details["preempted_session_id"] for r in preempt] == [youngest.report.session_id]
    entry = preempt[0].entry
    assert (entry.operator_id, entry.incident_id) == ("police-op", incident_id)
    assert entry.details["session_id"] == police.report.session_id
    assert entry.details["preempted_operator"] == "gangnam-op"
    closes = [r.entry for r in audit_log.search(database, action="session.close", limit=20)
              if r.entry.details.get("session_id") == youngest.report.session_id]
    assert closes and closes[0].reason == youngest.report.ended_reason
    assert audit_log.verify(database).ok


@pytest.mark.media
async def test_2_caps_from_the_policy_file_refuse_a_fourth_standing_session(
        core_config: CoreConfig, tmp_path: Path, agent_config: AgentConfigFactory) -> None:
    """The same operator under ``[session_caps] per_operator = 2``: the third view is refused
    at the core, recorded, before any agent slot is touched."""
    shipped = (Path(cloud_core.__file__).with_name("policy.toml")).read_text(encoding="utf-8")
    policy = tmp_path / "policy.toml"
    policy.write_text(shipped.replace("per_operator = 16", "per_operator = 2", 1),
                      encoding="utf-8")
    async with CoreServer(replace(core_config, policy_file=policy)) as core:
        await core.wait_connected()
        assert core.access is not None
        assert core.access.policy.session_caps.per_operator == 2
        _, token = core.access.operators.add("gangnam-op", agency="district:gangnam",
                                             role="operator", policy=core.access.policy)
        async with EdgeAgent(agent_config(GANGNAM, cameras=3)):
            await core.wait_until(lambda r: len(r.list_cameras(district_id="gangnam",
                                                               status="online")) == 3, 10)
            viewers = [CameraViewer(core.address, f"gangnam-00{n}",
                                    webrtc=WebRtcSettings.loopback(), token=token)
                       for n in (1, 2, 3)]
            try:
                await viewers[0].open()
                await viewers[1].open()
                with pytest.raises(ViewError) as refused:
                    await viewers[2].open()
            finally:
                for viewer in viewers:
                    await viewer.close()
        assert refused.value.code == "PERMISSION_DENIED"
        assert "already holds 2 open sessions; at most 2" in refused.value.message
        denials = audit_log.search(core.config.audit_database, action="access.deny", limit=5)
        assert any("at most 2" in (r.entry.reason or "") for r in denials)
