"""A fleeing suspect with the real parts: Mosquitto, the core's gRPC server, the Mapo and Gangnam
agents with synthetic cameras, aiortc viewers. The CAD feed back-fills the route's positions."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.webrtc import WebRtcSettings
from tests.conftest import GANGNAM, MAPO, AgentConfigFactory
from viewer.client import CameraViewer

pytestmark = pytest.mark.media

HONGIK = (MAPO.cameras[0].lat, MAPO.cameras[0].lon)
GANGNAM_STATION = (GANGNAM.cameras[0].lat, GANGNAM.cameras[0].lon)


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def _move(incident_id: str, at: tuple[float, float], when: datetime) -> core_pb2.MoveIncidentRequest:
    request = core_pb2.MoveIncidentRequest(incident_id=incident_id, source="cad",
                                           location=core_pb2.GeoPoint(lat=at[0], lon=at[1]))
    request.at.FromDatetime(when)
    return request


async def test_the_grant_follows_a_suspect_from_mapo_to_gangnam_and_left_cameras_close(
        core: CoreServer, agent_config: AgentConfigFactory, tokens: dict[str, str]) -> None:
    async with EdgeAgent(agent_config(MAPO, cameras=1)) as mapo, \
            EdgeAgent(agent_config(GANGNAM, cameras=1)):
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 2, 10)
        started = datetime.now(UTC) - timedelta(minutes=10)
        report = core_pb2.ReportIncidentRequest(
            incident_type="robbery", external_ref="112-2026-0777",
            location=core_pb2.GeoPoint(lat=HONGIK[0], lon=HONGIK[1]))
        report.occurred_at.FromDatetime(started)
        metadata = _auth(tokens["police-op"])
        async with grpc.aio.insecure_channel(core.address) as channel:
            stub = core_pb2_grpc.IncidentServiceStub(channel)
            first = await stub.Report(report, metadata=metadata)
            retry = await stub.Report(report, metadata=metadata)
            assert retry.existing and retry.incident.incident_id == first.incident.incident_id
            incident_id = first.incident.incident_id
            viewer = CameraViewer(core.address, "mapo-001", webrtc=WebRtcSettings.loopback(),
                                  token=tokens["police-op"], incident_id=incident_id)
            await viewer.open()
            try:
                await viewer.wait_frames(3, timeout=10)
                session_id = viewer.report.session_id
                route = [(HONGIK[0] + (GANGNAM_STATION[0] - HONGIK[0]) * f,
                          HONGIK[1] + (GANGNAM_STATION[1] - HONGIK[1]) * f)
                         for f in (0.25, 0.5, 0.75)]
                for minutes, point in zip((8, 6, 4), route, strict=True):
                    moved_at = time.monotonic()
                    await stub.Move(_move(incident_id, point, datetime.now(UTC)
                                          - timedelta(minutes=minutes)), metadata=metadata)
                async with asyncio.timeout(5):
                    while session_id in mapo.sessions:
                        await asyncio.sleep(0.05)
                closed_after = time.monotonic() - moved_at
            finally:
                await viewer.close()
            moved = await stub.Move(_move(incident_id, GANGNAM_STATION, datetime.now(UTC)),
                                    metadata=metadata)
        assert closed_after < 5
        assert moved.cameras[0].camera_id == "gangnam-001"
        assert len(moved.incident.trail) == 5
        record = core.registry.session(session_id)
        assert record is not None and record["close_reason"] == "camera out of the incident's range"
        gangnam_view = CameraViewer(core.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                                    token=tokens["police-op"], incident_id=incident_id)
        await gangnam_view.open()
        try:
            await gangnam_view.wait_frames(3, timeout=10)
        finally:
            await gangnam_view.close()
        assert core.access is not None   # golden time, reported by the CLI viewer
        recorded = {(r.camera_id, r.client) for r in core.access.golden_time.rows()}
        assert {("mapo-001", "cli"), ("gangnam-001", "cli")} <= recorded
