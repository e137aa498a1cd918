"""An evidence clip being recorded when its agent is SIGKILLed: at the agent's restart it is sealed
with the segments that made it to disk — its manifest signed, marked truncated by the crash, the
cut-off segment kept aside and hashed — and its hash goes on the core's audit chain."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import av
import pytest

from cloud_core import audit as audit_log
from cloud_core.server import CoreServer
from runtime.evidence_manifest import read_manifest
from safetynet.broker import MosquittoBroker
from safetynet.cli import main
from simulators.agent_configs import agent_config_text
from tests.conftest import GANGNAM, SMALL_SIM

pytestmark = pytest.mark.media

CAMERA = GANGNAM.cameras[0]


async def start_agent(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", "agent", "--config", str(config),
        "--log-level", "warning", stdin=asyncio.subprocess.DEVNULL)


async def until(predicate: Callable[[], bool], timeout: float) -> None:
    """Poll the agent's disk (a file appearing has no event to wait on) until ``predicate()``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_a_clip_cut_off_by_a_crash_is_sealed_at_restart_and_chained(
        core: CoreServer, mosquitto: MosquittoBroker, tokens: dict[str, str],
        tmp_path: Path) -> None:
    assert core.access is not None and core.evidence is not None and core.audit is not None
    config = tmp_path / "gangnam.toml"
    config.write_text(agent_config_text(
        replace(GANGNAM, cameras=(CAMERA,)), broker_host=mosquitto.host,
        broker_port=mosquitto.port, source=SMALL_SIM,
        grant_public_key=core.config.grant_public_key_path)
        + '\n[evidence]\ndirectory = "evidence"\nkey_file = "agent.key"\nsegment_seconds = 1\n')
    police = core.access.authenticate(tokens["police-op"])
    agent = await start_agent(config)
    try:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 1, 20)
        report = await core.access.report_incident(police, incident_type="robbery",
                                                   lat=CAMERA.lat, lon=CAMERA.lon)
        incident = report.incident.incident.incident_id
        [clip] = await core.evidence.preserve(police, incident, [CAMERA.camera_id],
                                              max_seconds=60)
        folder = tmp_path / "evidence" / clip.clip_id
        # Two segments closed and a third being written: then the agent dies.
        await until(lambda: (folder / "segment-00002.mp4").exists(), 20)
        agent.send_signal(signal.SIGKILL)
        await agent.wait()
        assert core.evidence.clip(clip.clip_id).state == "recording"
        assert not (folder / "manifest.json").exists()

        agent = await start_agent(config)
        await core.wait_until(
            lambda _: core.evidence.clip(clip.clip_id).state == "sealed", 20)
    finally:
        if agent.returncode is None:
            agent.send_signal(signal.SIGTERM)
            async with asyncio.timeout(15):
                await agent.wait()

    manifest = folder / "manifest.json"
    body, _ = read_manifest(manifest.read_bytes())
    assert body["truncated_by_crash"] is True
    assert body["end_reason"].startswith("truncated: the agent stopped while recording")
    assert len(body["segments"]) >= 2
    for segment in body["segments"]:  # every listed segment is whole and plays
        with av.open(str(folder / segment["file"])) as played:
            assert sum(1 for _ in played.decode(video=0)) == segment["frames"] > 0
    [partial] = body["partial_segments"]  # the one being written, kept aside and hashed
    cut_off = folder / partial["file"]
    assert partial["file"].endswith(".mp4.partial")
    assert hashlib.sha256(cut_off.read_bytes()).hexdigest() == partial["sha256"]
    assert main(["evidence", "verify", str(folder), str(manifest),
                 "--public-key", str(tmp_path / "agent.pub")]) == 0

    # Its hash is on the core's chain, which verifies, and says how the clip ended.
    assert audit_log.verify(core.audit.db_path).ok
    seal = next(r for r in audit_log.search(core.audit.db_path, incident_id=incident, limit=100)
                if r.entry.action.value == "evidence.seal")
    assert seal.entry.details["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert seal.entry.details["truncated_by_crash"] is True
    assert seal.entry.reason == body["end_reason"]
