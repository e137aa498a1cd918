"""Incident grants, edge-checked tokens and the audit trail, with the real parts: Mosquitto, the
core's gRPC server, an edge agent with synthetic cameras, aiortc viewers."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core import audit as audit_log
from cloud_core.grants import GrantSigner
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.grant import GrantClaimsData
from runtime.mqtt_link import MqttLink
from runtime.webrtc import WebRtcSettings, h264_codecs
from tests.conftest import GANGNAM, AgentConfigFactory
from viewer.client import CameraViewer, ViewError, watch

pytestmark = pytest.mark.media

GANGNAM_STATION = (37.49795, 127.02760)   # gangnam-001
SAMSEONG = (37.50881, 127.06316)          # gangnam-007, ~3.4 km east


_CASES = itertools.count(1)   # one case number per report: a repeated one is a retry


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _report(core: CoreServer, token: str, incident_type: str, at: tuple[float, float],
                  radius: float = 0) -> core_pb2.IncidentReport:
    async with grpc.aio.insecure_channel(core.address) as channel:
        return await core_pb2_grpc.IncidentServiceStub(channel).Report(
            core_pb2.ReportIncidentRequest(incident_type=incident_type, radius_m=radius,
                                           location=core_pb2.GeoPoint(lat=at[0], lon=at[1]),
                                           external_ref=f"112-2026-{next(_CASES):04d}"),
            metadata=_auth(token))


async def _ready(core: CoreServer, cameras: int) -> None:
    await core.wait_until(
        lambda r: len(r.list_cameras(district_id="gangnam", status="online")) == cameras, 10)


async def test_incident_grant_opens_video_and_closing_it_ends_the_session_within_5_s(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=8)) as agent:
        await _ready(core, 8)
        report = await _report(core, tokens["police-op"], "robbery", GANGNAM_STATION)
        incident_id = report.incident.incident_id
        assert report.incident.service and "police-112" in report.incident.agencies
        assert report.cameras[0].camera_id == "gangnam-001"
        assert all(c.distance_m <= report.incident.radius_m for c in report.cameras)

        viewer = CameraViewer(core.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                              token=tokens["police-op"], incident_id=incident_id)
        await viewer.open()
        try:
            await viewer.wait_frames(5, timeout=10)
            session_id = viewer.report.session_id
            assert session_id in agent.sessions

            async with grpc.aio.insecure_channel(core.address) as channel:
                started = time.monotonic()
                await core_pb2_grpc.IncidentServiceStub(channel).Close(
                    core_pb2.CloseIncidentRequest(incident_id=incident_id, reason="suspect arrested"),
                    metadata=_auth(tokens["police-op"]))
            async with asyncio.timeout(5):
                while session_id in agent.sessions:
                    await asyncio.sleep(0.05)
            teardown = time.monotonic() - started
        finally:
            await viewer.close()
        assert teardown < 5
        await core.wait_until(lambda r: bool((r.session(session_id) or {}).get("bytes_sent")), 5)
        record = core.registry.session(session_id)
        assert record["close_reason"] == "incident closed" and record["bytes_sent"] > 0

        # The same operator cannot open the camera again on the closed incident.
        with pytest.raises(ViewError) as caught:
            await watch(core.address, "gangnam-001", seconds=0, webrtc=WebRtcSettings.loopback(),
                        token=tokens["police-op"], incident_id=incident_id)
        assert caught.value.code == "PERMISSION_DENIED" and "is closed" in caught.value.message

    # Who, what, when, why, outcome: on the record, in order, and the chain holds.
    actions = [r.entry.action.value for r in audit_log.search(core.config.audit_location, limit=100)][::-1]
    for expected in ("incident.report", "access.grant", "session.open", "incident.close",
                     "grant.revoke", "session.close", "access.deny"):
        assert expected in actions
    grant = audit_log.search(core.config.audit_location, action="access.grant", limit=1)[0].entry
    assert (grant.operator_id, grant.agency, grant.camera_ids, grant.incident_id) == (
        "police-op", "police-112", ("gangnam-001",), incident_id)
    assert grant.legal_basis and grant.purpose and grant.period_end is not None
    closed = audit_log.search(core.config.audit_location, action="session.close", limit=1)[0].entry
    assert closed.details["bytes_sent"] > 0 and closed.details["duration_seconds"] > 0
    assert audit_log.verify(core.config.audit_location).ok


async def test_agency_outside_the_service_or_camera_outside_the_radius_is_refused_with_a_reason(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=8)):
        await _ready(core, 8)
        webrtc = WebRtcSettings.loopback()
        fire = await _report(core, tokens["fire-op"], "fire", GANGNAM_STATION, radius=300)
        assert fire.facilities, "a 119 incident lists nearby parking and hazardous facilities"
        assert {f.kind for f in fire.facilities} <= {"parking", "hazardous"}
        inside = fire.cameras[0].camera_id
        report = await watch(core.address, inside, seconds=0, webrtc=webrtc,
                             token=tokens["fire-op"], incident_id=fire.incident.incident_id)
        assert report.frames >= 1
        with pytest.raises(ViewError) as outside:
            await watch(core.address, "gangnam-007", seconds=0, webrtc=webrtc,
                        token=tokens["fire-op"], incident_id=fire.incident.incident_id)
        assert outside.value.code == "PERMISSION_DENIED"
        assert "not within incident" in outside.value.message and "300 m radius" in outside.value.message

        robbery = await _report(core, tokens["police-op"], "robbery", GANGNAM_STATION)
        with pytest.raises(ViewError) as other_agency:
            await watch(core.address, "gangnam-001", seconds=0, webrtc=webrtc,
                        token=tokens["fire-op"], incident_id=robbery.incident.incident_id)
        assert other_agency.value.code == "PERMISSION_DENIED"
        assert "fire-119 is not admitted" in other_agency.value.message

        with pytest.raises(grpc.aio.AioRpcError) as noise:
            await _report(core, tokens["police-op"], "noise-complaint", GANGNAM_STATION)
        assert noise.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(ViewError) as auditor:
            await watch(core.address, "gangnam-001", seconds=0, webrtc=webrtc,
                        token=tokens["auditor"], incident_id=robbery.incident.incident_id)
    assert auditor.value.code == "PERMISSION_DENIED" and "may not view video" in auditor.value.message


async def test_disabling_an_operator_ends_their_session_and_their_token(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)) as agent:
        await _ready(core, 1)
        viewer = CameraViewer(core.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                              token=tokens["gangnam-op"])
        await viewer.open()
        try:
            await viewer.wait_frames(3, timeout=10)
            core.access.operators.disable("gangnam-op")
            started = time.monotonic()
            async with asyncio.timeout(5):
                while agent.sessions:
                    await asyncio.sleep(0.05)
            assert time.monotonic() - started < 5
        finally:
            await viewer.close()
        with pytest.raises(ViewError) as caught:
            await watch(core.address, "gangnam-001", seconds=0, webrtc=WebRtcSettings.loopback(),
                        token=tokens["gangnam-op"])
        assert caught.value.code == "UNAUTHENTICATED"


async def test_break_glass_is_for_supervisors_only_and_recorded_as_a_pair(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=2)):
        await _ready(core, 2)
        async with grpc.aio.insecure_channel(core.address) as channel:
            stub = core_pb2_grpc.GrantServiceStub(channel)
            request = core_pb2.StartBreakGlassRequest(
                camera_ids=["gangnam-002"], minutes=10,
                reason="missing child seen near Sinsa Station, 112 line down")
            with pytest.raises(grpc.aio.AioRpcError) as plain:
                await stub.StartBreakGlass(request, metadata=_auth(tokens["police-op"]))
            assert plain.value.code() == grpc.StatusCode.PERMISSION_DENIED
            too_long = core_pb2.StartBreakGlassRequest(camera_ids=["gangnam-002"], minutes=45,
                                                       reason=request.reason)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.StartBreakGlass(too_long, metadata=_auth(tokens["police-sup"]))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "at most 30 minutes" in (refused.value.details() or "")
            too_long.clamp_to_max = True
            capped = await stub.StartBreakGlass(too_long, metadata=_auth(tokens["police-sup"]))
            assert capped.expires_at.ToDatetime() - capped.started_at.ToDatetime() <= timedelta(minutes=30)
            await stub.StopBreakGlass(core_pb2.StopBreakGlassRequest(breakglass_id=capped.breakglass_id),
                                      metadata=_auth(tokens["police-sup"]))
            with pytest.raises(grpc.aio.AioRpcError) as no_reason:
                await stub.StartBreakGlass(core_pb2.StartBreakGlassRequest(
                    camera_ids=["gangnam-002"], minutes=5, reason="x"), metadata=_auth(tokens["police-sup"]))
            assert no_reason.value.code() in (grpc.StatusCode.INVALID_ARGUMENT,
                                              grpc.StatusCode.PERMISSION_DENIED)
            window = await stub.StartBreakGlass(request, metadata=_auth(tokens["police-sup"]))
            report = await watch(core.address, "gangnam-002", seconds=0,
                                 webrtc=WebRtcSettings.loopback(), token=tokens["police-sup"],
                                 breakglass_id=window.breakglass_id)
            assert report.frames >= 1
            with pytest.raises(ViewError):
                await watch(core.address, "gangnam-001", seconds=0, webrtc=WebRtcSettings.loopback(),
                            token=tokens["police-sup"], breakglass_id=window.breakglass_id)
            await stub.StopBreakGlass(core_pb2.StopBreakGlassRequest(breakglass_id=window.breakglass_id),
                                      metadata=_auth(tokens["police-sup"]))
    attempts = audit_log.search(core.config.audit_location, action="breakglass.start")
    assert [r.entry.outcome.value for r in attempts].count("denied") == 1  # the plain operator
    starts = [r for r in attempts if r.entry.outcome.value == "ok"]
    stops = audit_log.search(core.config.audit_location, action="breakglass.stop")
    assert len(starts) == len(stops) == 2
    assert {r.entry.details["breakglass_id"] for r in starts} == {
        r.entry.details["breakglass_id"] for r in stops}
    assert {r.entry.details["ended"] for r in stops} == {"stopped"}


async def _signal(link: MqttLink, responses: asyncio.Queue, offer: mqtt_pb2.SessionOffer) -> mqtt_pb2.SignalResponse:  # type: ignore[type-arg]
    request = mqtt_pb2.SignalRequest(request_id=f"req-{offer.session_id}", offer=offer)
    await link.publish(topics.signal_request("gangnam"), request.SerializeToString())
    async with asyncio.timeout(10):
        while True:
            response = await responses.get()
            if response.request_id == request.request_id:
                return response


async def test_agent_refuses_forged_expired_wrong_camera_and_replayed_grants(
        core: CoreServer, agent_config: AgentConfigFactory, broker_settings) -> None:
    """What a compromised broker could send: the agent answers none of it with video."""
    from aiortc import RTCPeerConnection

    webrtc = WebRtcSettings.loopback()
    pc = RTCPeerConnection(webrtc.rtc_configuration())
    pc.addTransceiver("video", direction="recvonly").setCodecPreferences(
        h264_codecs(with_rtx=False))
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()

    signer = core.access.signer
    forger = GrantSigner(Ed25519PrivateKey.generate())
    now = datetime.now(UTC)

    def claims(session_id: str, camera: str = "gangnam-001", **changes: object) -> GrantClaimsData:
        base = dict(session_id=session_id, camera_id=camera, district_id="gangnam",
                    operator_id="mallory", agency="police-112", incident_id="INC-x", purpose="test",
                    not_before=now - timedelta(seconds=1), expires_at=now + timedelta(minutes=5))
        return GrantClaimsData(**{**base, **changes})  # type: ignore[arg-type]

    responses: asyncio.Queue[mqtt_pb2.SignalResponse] = asyncio.Queue()

    async def on_message(message) -> None:
        responses.put_nowait(mqtt_pb2.SignalResponse.FromString(message.payload))

    async with EdgeAgent(agent_config(GANGNAM, cameras=2)) as agent, MqttLink(
            broker_settings, client_id="mallory", on_message=on_message,
            subscriptions=[topics.signal_response("gangnam")]) as link:
        await link.wait_connected(5)
        await agent.link.wait_connected(5)
        cases = {
            "unsigned": b"",
            "forged": forger.sign(claims("s-forged")),
            "expired": signer.sign(claims("s-expired", not_before=now - timedelta(minutes=10),
                                          expires_at=now - timedelta(minutes=1))),
            "wrong camera": signer.sign(claims("s-wrong", camera="gangnam-002")),
            "garbage": b"\x08\x96\x01not a grant",
        }
        for name, grant in cases.items():
            session_id = {"forged": "s-forged", "expired": "s-expired", "wrong camera": "s-wrong"}.get(
                name, f"s-{name}")
            offer = mqtt_pb2.SessionOffer(session_id=session_id, camera_id="gangnam-001",
                                          sdp_offer=sdp, grant=grant)
            response = await _signal(link, responses, offer)
            assert response.WhichOneof("result") == "error", name
            assert response.error.code == mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED, name
        # A valid grant works once; replaying the same message is refused.
        good = mqtt_pb2.SessionOffer(session_id="s-good", camera_id="gangnam-001", sdp_offer=sdp,
                                     grant=signer.sign(claims("s-good")))
        assert (await _signal(link, responses, good)).WhichOneof("result") == "sdp_answer"
        await agent.sessions["s-good"].close("test done")
        replay = await _signal(link, responses, good)
        assert replay.error.code == mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED
        assert "replay" in replay.error.message or "already" in replay.error.message
        assert list(agent.sessions) == []


async def test_audit_service_is_for_auditors(core: CoreServer, tokens) -> None:
    await _report(core, tokens["police-op"], "robbery", GANGNAM_STATION)
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.AuditServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Verify(core_pb2.VerifyAuditRequest(), metadata=_auth(tokens["police-sup"]))
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        verified = await stub.Verify(core_pb2.VerifyAuditRequest(), metadata=_auth(tokens["auditor"]))
        assert verified.ok and verified.records >= 1
        exported = await stub.Export(core_pb2.ExportAuditRequest(format="json"),
                                     metadata=_auth(tokens["auditor"]))
        rows = json.loads(exported.content)
        assert any(row["action"] == "incident.report" for row in rows)
        found = await stub.Search(core_pb2.SearchAuditRequest(operator_id="police-op"),
                                  metadata=_auth(tokens["auditor"]))
        assert found.records_json and all(json.loads(r)["operator_id"] == "police-op"
                                          for r in found.records_json)
    # The export itself is on the record.
    assert audit_log.search(core.config.audit_location, action="audit.export")
