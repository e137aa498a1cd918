"""Two cores on one PostgreSQL and one broker: everything they keep is in the one database
(registry, sessions, incidents, operators, the audit chain), so either answers any call: they see
the same cameras, one closes the session the other opened, the audit chain is appended by both
and one leader signs it, taken over when the leader stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import grpc
import pytest

from cloud_core.audit import search, verify
from cloud_core.config import CoreConfig
from cloud_core.exceptions import DatabaseUnavailable
from cloud_core.registry import Registry
from cloud_core.server import CoreServer
from cloud_core.storage.settings import StorageSettings
from edge_agent.agent import EdgeAgent
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.signing_keys import load_or_create_signing_key
from runtime.webrtc import WebRtcSettings
from safetynet.postgres_server import ThrowawayPostgres
from tests.cloud_core.test_audit import entry
from tests.conftest import GANGNAM, AgentConfigFactory
from viewer.client import CameraViewer


def replica(core_config: CoreConfig, tmp_path: Path, name: str, dsn: str) -> CoreConfig:
    folder = tmp_path / name
    folder.mkdir()
    checkpoint_key = tmp_path / "audit-checkpoint.key"  # the city's one checkpoint key, read only
    load_or_create_signing_key(checkpoint_key)
    return replace(core_config, database=folder / "core.sqlite3", client_id=f"core-{name}",
                   grant_key_file=tmp_path / "grant-signing.key",  # the city's one key
                   checkpoint_key_file=checkpoint_key, storage=StorageSettings(url=dsn))


async def test_two_replicas_append_one_chain_and_one_leads(
    core_config: CoreConfig, tmp_path: Path, pg_dsn: str,
) -> None:
    async with CoreServer(replica(core_config, tmp_path, "a", pg_dsn)) as a:
        async with CoreServer(replica(core_config, tmp_path, "b", pg_dsn)) as b:
            assert a.audit is not None and b.audit is not None
            assert a.leadership is not None and b.leadership is not None
            assert a.leadership.is_leader and not b.leadership.is_leader
            for n in range(0, 40, 2):
                await asyncio.gather(a.audit.append(entry(n)), b.audit.append(entry(n + 1)))
            assert await b.audit.checkpoint() is None  # a follower never signs
            await a.audit.checkpoint()  # None when its interval has signed the head already
            assert verify(pg_dsn).last_checkpoint_seq == 40
            await a.close()
            async with asyncio.timeout(5):
                await b.leadership.wait_leader()
            await b.audit.append(entry(40))
    report = verify(pg_dsn)
    assert report.ok and report.records == 41, report.problems
    assert report.last_checkpoint_seq == 41  # b signed the head on close, as the leader


async def test_a_replica_with_a_wrong_password_does_not_start(
    core_config: CoreConfig, tmp_path: Path, postgres: ThrowawayPostgres, pg_dsn: str,
) -> None:
    config = replica(core_config, tmp_path, "a", pg_dsn.replace(postgres.password, "wrong"))
    with pytest.raises(DatabaseUnavailable, match="password authentication failed"):
        async with CoreServer(config):
            pass


def _gangnam_online(cameras: int):
    def check(registry: Registry) -> bool:
        return len(registry.list_cameras(district_id="gangnam", status="online")) == cameras
    return check


@contextlib.asynccontextmanager
async def _replicas_and_gangnam(
    core_config: CoreConfig, tmp_path: Path, pg_dsn: str, agent_config: AgentConfigFactory,
    operator_id: str, agency: str,
) -> AsyncIterator[tuple[CoreServer, CoreServer, EdgeAgent, str]]:
    """Replicas A and B on one database and broker, Gangnam's agent (3 cameras) online in
    both, and an operator's token: (a, b, agent, token)."""
    async with CoreServer(replica(core_config, tmp_path, "a", pg_dsn)) as a, \
            CoreServer(replica(core_config, tmp_path, "b", pg_dsn)) as b:
        await asyncio.gather(a.wait_connected(), b.wait_connected())
        assert a.access is not None and b.access is not None
        _, token = a.access.operators.add(operator_id, agency=agency, role="operator",
                                          policy=a.access.policy)
        async with EdgeAgent(agent_config(GANGNAM, cameras=3)) as agent:
            await asyncio.gather(a.wait_until(_gangnam_online(3), 10),
                                 b.wait_until(_gangnam_online(3), 10))
            yield a, b, agent, token


@pytest.mark.media
async def test_two_replicas_see_one_city_and_either_closes_a_session(
    core_config: CoreConfig, tmp_path: Path, pg_dsn: str, agent_config: AgentConfigFactory,
) -> None:
    async with _replicas_and_gangnam(core_config, tmp_path, pg_dsn, agent_config,
                                     "gangnam-op", "district:gangnam") as (a, b, agent, token):
        auth = (("authorization", f"Bearer {token}"),)
        # Both ingest the agent's statuses into the one registry; each lists it whole.
        for core in (a, b):
            async with grpc.aio.insecure_channel(core.address) as channel:
                listed = await core_pb2_grpc.CameraServiceStub(channel).ListCameras(
                    core_pb2.ListCamerasRequest(district_id="gangnam"), metadata=auth)
            assert [c.camera_id for c in listed.cameras] == [
                "gangnam-001", "gangnam-002", "gangnam-003"]
            assert core.ingest.dropped == 0

        viewer = CameraViewer(a.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                              token=token)
        await viewer.open()
        try:
            await viewer.wait_frames(3, timeout=10)
            session_id = viewer.report.session_id
            assert session_id in agent.sessions
            async with grpc.aio.insecure_channel(b.address) as channel:  # not the opener
                await core_pb2_grpc.SessionServiceStub(channel).CloseSession(
                    core_pb2.CloseSessionRequest(session_id=session_id), metadata=auth)
            assert session_id not in agent.sessions  # B's close reached the agent
            async with asyncio.timeout(5):
                await viewer.ended.wait()
        finally:
            await viewer.close()
        # The agent's report of the end reaches both replicas; it goes on the record once.
        await a.wait_until(lambda r: bool((r.session(session_id) or {}).get("bytes_sent")), 5)
        record = b.registry.session(session_id) if b.registry else None
        assert record is not None and record["close_reason"] == "closed by viewer"
        assert a.broker is not None and a.broker.phase(session_id) is None
    closes = [r.entry for r in search(pg_dsn, action="session.close")
              if r.entry.details.get("session_id") == session_id]
    assert len(closes) == 1 and closes[0].details["bytes_sent"] > 0
    assert verify(pg_dsn).ok


@pytest.mark.media
async def test_a_revoke_on_one_replica_ends_a_session_opened_on_the_other(
    core_config: CoreConfig, tmp_path: Path, pg_dsn: str, agent_config: AgentConfigFactory,
) -> None:
    async with _replicas_and_gangnam(core_config, tmp_path, pg_dsn, agent_config,
                                     "police-op", "police-112") as (a, b, agent, token):
        auth = (("authorization", f"Bearer {token}"),)
        camera = GANGNAM.cameras[0]
        async with grpc.aio.insecure_channel(a.address) as channel:
            report = await core_pb2_grpc.IncidentServiceStub(channel).Report(
                core_pb2.ReportIncidentRequest(
                    incident_type="robbery",
                    location=core_pb2.GeoPoint(lat=camera.lat, lon=camera.lon)),
                metadata=auth)
        incident_id = report.incident.incident_id
        viewer = CameraViewer(b.address, camera.camera_id, webrtc=WebRtcSettings.loopback(),
                              token=token, incident_id=incident_id)  # opened on B
        await viewer.open()
        try:
            await viewer.wait_frames(3, timeout=10)
            session_id = viewer.report.session_id
            assert session_id in agent.sessions
            revoked_at = asyncio.get_running_loop().time()
            async with grpc.aio.insecure_channel(a.address) as channel:  # revoked on A
                await core_pb2_grpc.IncidentServiceStub(channel).Close(
                    core_pb2.CloseIncidentRequest(incident_id=incident_id,
                                                  reason="suspect arrested"),
                    metadata=auth)
            async with asyncio.timeout(5):
                await viewer.ended.wait()
            assert asyncio.get_running_loop().time() - revoked_at < 5
            assert session_id not in agent.sessions
        finally:
            await viewer.close()
        assert (b.registry.session(session_id) or {}).get("close_reason") == "incident closed"
    assert verify(pg_dsn).ok
