"""The two-district slice with real parts: Mosquitto, the core's gRPC server, edge agents with
synthetic H.264 cameras, and aiortc viewers decoding real media peer to peer."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import grpc
import pytest

from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from edge_agent.camera_sources.synthetic_scene import SyntheticCamera
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.mqtt_link import MqttLink
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker
from tests.conftest import GANGNAM, MAPO, AgentConfigFactory
from viewer.client import CameraViewer, ViewError, watch

pytestmark = pytest.mark.media


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _add_operator(server: CoreServer, name: str, agency: str, role: str = "operator") -> str:
    assert server.access is not None
    return server.access.operators.add(name, agency=agency, role=role, policy=server.access.policy)[1]


def _online(district: str, camera: str):
    def check(registry) -> bool:
        record = registry.camera(camera)
        return record is not None and record.agent_online and record.district_id == district
    return check


async def test_viewer_receives_and_decodes_frames_from_each_district(
        core: CoreServer, agent_config: AgentConfigFactory, tokens, tmp_path) -> None:
    async with EdgeAgent(agent_config(GANGNAM)), EdgeAgent(agent_config(MAPO)):
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
        await core.wait_until(_online("mapo", "mapo-001"), 10)
        for camera in ("gangnam-001", "mapo-001"):
            district = camera.split("-")[0]
            report = await watch(core.address, camera, seconds=0.5, webrtc=WebRtcSettings.loopback(),
                                 snapshot=tmp_path / f"{camera}.png", token=tokens[f"{district}-op"])
            assert report.frames >= 3
            assert (report.width, report.height) == (320, 240)
            assert report.time_to_first_frame_ms is not None
            assert report.district_id == camera.split("-")[0]
            assert (tmp_path / f"{camera}.png").stat().st_size > 1000


async def test_camera_status_reaches_the_registry_and_list_cameras(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=20)):
        await core.wait_until(lambda r: len(r.list_cameras(district_id="gangnam", status="online")) == 20, 10)
        async with grpc.aio.insecure_channel(core.address) as channel:
            stub = core_pb2_grpc.CameraServiceStub(channel)
            near = core_pb2.ListCamerasRequest(near=core_pb2.Near(
                point=core_pb2.GeoPoint(lat=37.49795, lon=127.02760), radius_m=1500))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListCameras(near)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            auth = _auth(tokens["fire-op"])
            response = await stub.ListCameras(near, metadata=auth)
            distances = [c.distance_m for c in response.cameras]
            assert response.cameras[0].camera_id == "gangnam-001"
            assert distances == sorted(distances) and distances[-1] <= 1500
            assert all(c.status == mqtt_pb2.CAMERA_STATE_ONLINE and c.agent_online
                       for c in response.cameras)
            everything = await stub.ListCameras(core_pb2.ListCamerasRequest(district_id="gangnam"),
                                                metadata=auth)
            assert len(everything.cameras) == 20
            camera = await stub.GetCamera(core_pb2.GetCameraRequest(camera_id="gangnam-003"),
                                          metadata=auth)
            assert camera.name == GANGNAM.cameras[2].name


async def test_two_viewers_of_one_camera_share_one_source_and_one_encoder(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)) as agent:
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
        encoders_before = SyntheticCamera.encoders_started
        webrtc = WebRtcSettings.loopback()
        async with CameraViewer(core.address, "gangnam-001", webrtc=webrtc, token=tokens["gangnam-op"]) as first, \
                CameraViewer(core.address, "gangnam-001", webrtc=webrtc, token=tokens["gangnam-op"]) as second:
            await first.wait_frames(5, timeout=10)
            await second.wait_frames(5, timeout=10)
            assert len(agent.sessions) == 2
            assert agent.feeds["gangnam-001"].viewers == 2
        assert agent.feeds["gangnam-001"].source.opens == 1
        assert SyntheticCamera.encoders_started - encoders_before == 1


async def test_joining_viewer_gets_the_cached_gop_at_once(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    # A 4 s GOP: without the cache the second viewer would wait up to 4 s for a key frame.
    config = agent_config(GANGNAM, cameras=1, source="sim:?size=320x240&fps=15&gop=4&kbps=300")
    async with EdgeAgent(config):
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
        webrtc = WebRtcSettings.loopback()
        async with CameraViewer(core.address, "gangnam-001", webrtc=webrtc, token=tokens["gangnam-op"]) as first:
            await first.wait_frames(20, timeout=10)  # well past the first key frame
            async with CameraViewer(core.address, "gangnam-001", webrtc=webrtc, token=tokens["gangnam-op"]) as second:
                async with asyncio.timeout(2.0):
                    await second.first_frame.wait()


async def test_unknown_camera_is_refused_without_revealing_it(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)):
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
        webrtc = WebRtcSettings.loopback()
        with pytest.raises(ViewError) as unknown:
            await watch(core.address, "gangnam-999", seconds=0, webrtc=webrtc, token=tokens["gangnam-op"])
        with pytest.raises(ViewError) as foreign:
            await watch(core.address, "gangnam-001", seconds=0, webrtc=webrtc, token=tokens["mapo-op"])
        with pytest.raises(ViewError) as anonymous:
            await watch(core.address, "gangnam-001", seconds=0, webrtc=webrtc)
    assert unknown.value.code == foreign.value.code == "PERMISSION_DENIED"
    # Same words for a camera that does not exist and one that is not yours.
    assert unknown.value.message == foreign.value.message
    assert anonymous.value.code == "UNAUTHENTICATED"


async def test_stopped_agent_gives_unavailable_at_once(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)):
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
    await core.wait_until(lambda r: not r.district("gangnam").agent_online, 10)
    started = time.monotonic()
    with pytest.raises(ViewError) as caught:
        await watch(core.address, "gangnam-001", seconds=0, webrtc=WebRtcSettings.loopback(),
                    token=tokens["gangnam-op"])
    assert caught.value.code == "UNAVAILABLE"
    assert "offline" in caught.value.message
    assert time.monotonic() - started < 3


async def test_silent_agent_gives_unavailable_after_the_answer_timeout(
        core_config, mosquitto: MosquittoBroker, broker_settings) -> None:
    # The registry believes the agent is online (retained status), but nothing answers offers.
    config = replace(core_config, answer_timeout_seconds=1.0)
    status = mqtt_pb2.AgentStatus(district_id="gangnam", agent_id="ghost", state=mqtt_pb2.AGENT_STATE_ONLINE)
    camera = mqtt_pb2.CameraStatus(state=mqtt_pb2.CAMERA_STATE_ONLINE, camera=mqtt_pb2.CameraDescriptor(
        camera_id="gangnam-001", district_id="gangnam", name="ghost cam", lat=37.5, lon=127.0))

    async def ignore(message) -> None:
        return None

    async with MqttLink(broker_settings, client_id="ghost", on_message=ignore) as ghost:
        await ghost.wait_connected(5)
        await ghost.publish(topics.agent_status("gangnam"), status.SerializeToString(), retain=True)
        await ghost.publish(topics.camera_status("gangnam", "gangnam-001"), camera.SerializeToString(),
                            retain=True)
    async with CoreServer(config) as server:
        await server.wait_until(_online("gangnam", "gangnam-001"), 10)
        token = _add_operator(server, "gangnam-op", "district:gangnam")
        started = time.monotonic()
        with pytest.raises(ViewError) as caught:
            await watch(server.address, "gangnam-001", seconds=0, webrtc=WebRtcSettings.loopback(),
                        token=token)
        elapsed = time.monotonic() - started
    assert caught.value.code == "UNAVAILABLE"
    assert "no answer within 1 s" in caught.value.message
    assert elapsed < 4


async def test_malformed_offer_is_invalid_argument(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)) as agent:
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
        async with grpc.aio.insecure_channel(core.address) as channel:
            stub = core_pb2_grpc.SessionServiceStub(channel)
            for offer, words in (("", "empty"), ("hello", "v=0"),
                                 ("v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\ngarbage\r\n", "unusable SDP")):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.OpenSession(core_pb2.OpenSessionRequest(camera_id="gangnam-001",
                                                                       sdp_offer=offer),
                                           metadata=_auth(tokens["gangnam-op"]))
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert words in (caught.value.details() or "")
        assert agent.sessions == {}
        assert agent.feeds["gangnam-001"].viewers == 0


async def test_session_expiry_closes_it_at_the_agent_and_in_the_registry(
        core_config, agent_config: AgentConfigFactory) -> None:
    async with CoreServer(replace(core_config, session_ttl_seconds=1.5)) as server:
        async with EdgeAgent(agent_config(GANGNAM, cameras=1)) as agent:
            await server.wait_until(_online("gangnam", "gangnam-001"), 10)
            token = _add_operator(server, "gangnam-op", "district:gangnam")
            viewer = CameraViewer(server.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                                  token=token)
            await viewer.open()
            try:
                await viewer.wait_frames(3, timeout=10)
                session_id = viewer.report.session_id
                await server.wait_until(lambda r: r.session(session_id)["closed_at"] is not None, 10)
                record = server.registry.session(session_id)
                assert record["close_reason"] == "expired"
                assert agent.sessions == {}
            finally:
                await viewer.close()


async def test_agent_and_core_reconnect_after_the_broker_restarts(
        core: CoreServer, agent_config: AgentConfigFactory, mosquitto: MosquittoBroker,
        tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)) as agent:
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
        await mosquitto.stop()
        async with asyncio.timeout(10):
            while agent.link.connected.is_set():
                await asyncio.sleep(0.05)
        await mosquitto.start()
        await agent.link.wait_connected(15)
        await core.link.wait_connected(15)
        assert agent.link.connections == 2
        # The restarted broker lost retained state; the agent published it again on reconnect.
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
        report = await watch(core.address, "gangnam-001", seconds=0, webrtc=WebRtcSettings.loopback(),
                             token=tokens["gangnam-op"])
        assert report.frames >= 1


async def test_close_session_ends_it_at_the_agent(
        core: CoreServer, agent_config: AgentConfigFactory, tokens) -> None:
    async with EdgeAgent(agent_config(GANGNAM, cameras=1)) as agent:
        await core.wait_until(_online("gangnam", "gangnam-001"), 10)
        viewer = CameraViewer(core.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                              token=tokens["gangnam-op"])
        await viewer.open()
        await viewer.wait_frames(2, timeout=10)
        session_id = viewer.report.session_id
        assert session_id in agent.sessions
        await viewer.close()
        assert session_id not in agent.sessions
        record = core.registry.session(session_id)
        assert record["closed_at"] is not None and record["close_reason"] == "closed by viewer"
        await core.wait_until(lambda r: (r.session(session_id) or {}).get("close_reason") is not None, 5)
        async with grpc.aio.insecure_channel(core.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await core_pb2_grpc.SessionServiceStub(channel).CloseSession(
                    core_pb2.CloseSessionRequest(session_id=session_id),
                    metadata=_auth(tokens["gangnam-op"]))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_health_service_reports_serving(core: CoreServer) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "safetynet.v1.SessionService", "safetynet.v1.CameraService"):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING


