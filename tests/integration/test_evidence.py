"""Evidence clips with the real parts: the simulator's RTSP camera, Mosquitto, the core's gRPC,
an edge agent writing MP4 segments, the export through the core and `evidence verify`."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import av
import grpc
import pytest
from aiortc.codecs.h264 import H264Encoder
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core import audit as audit_log
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from edge_agent.camera_sources.h264 import NAL_PPS, NAL_SPS, annex_b_from_avcc, nal_type, nal_units
from edge_agent.camera_sources.transcoder import H264Transcoder
from edge_agent.evidence_settings import EvidenceSettings
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.evidence_manifest import read_manifest, sign_manifest
from safetynet.cli import main
from safetynet.commands.evidence import export_clip
from tests.conftest import GANGNAM, AgentConfigFactory
from tests.edge_agent.test_rtsp_source import needs_server, serve
from tests.integration.test_access_control import GANGNAM_STATION, _auth, _ready, _report
from tests.integration.test_rtsp_cameras import camera_is, rtsp_agent

pytestmark = pytest.mark.media

FIRST = GANGNAM.cameras[0].camera_id


def evidence_settings(tmp_path: Path, **changes: object) -> EvidenceSettings:
    settings = EvidenceSettings(directory=tmp_path / "evidence", key_file=tmp_path / "agent.key",
                                segment_seconds=1.0, pre_roll_seconds=5.0)
    return replace(settings, **changes)  # type: ignore[arg-type]


def parameter_sets(extradata: bytes) -> set[bytes]:
    annex_b = extradata if extradata.startswith(b"\x00\x00") else annex_b_from_avcc(extradata)
    # Trailing zero bytes (trailing_zero_8bits) are padding, not part of the parameter set.
    return {u.rstrip(b"\x00") for u in nal_units(annex_b) if nal_type(u) in (NAL_SPS, NAL_PPS)}


async def sealed(core: CoreServer, clip_id: str) -> None:
    assert core.evidence is not None
    await core.wait_until(lambda _: core.evidence.clip(clip_id).state == "sealed", 20)


@needs_server
async def test_a_clip_of_a_live_rtsp_camera_is_exported_verified_and_plays_as_the_camera_sent_it(
        core: CoreServer, agent_config: AgentConfigFactory, tokens: dict[str, str],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = 0
    original = H264Encoder.encode

    def counting_encode(self: H264Encoder, frame: object, force_keyframe: bool = False) -> object:
        nonlocal encoded
        encoded += 1
        return original(self, frame, force_keyframe)  # type: ignore[arg-type]

    monkeypatch.setattr(H264Encoder, "encode", counting_encode)
    transcoders = H264Transcoder.encoders_started
    out = tmp_path / "export"
    async with serve((FIRST,)) as server:
        config = replace(rtsp_agent(agent_config, server), evidence=evidence_settings(tmp_path))
        async with EdgeAgent(config) as agent:
            await core.wait_until(camera_is(FIRST, "online"), 10)
            report = await _report(core, tokens["police-op"], "robbery", GANGNAM_STATION)
            incident = report.incident.incident_id
            async with grpc.aio.insecure_channel(core.address) as channel:
                stub = core_pb2_grpc.EvidenceServiceStub(channel)
                started = await stub.Preserve(core_pb2.PreserveEvidenceRequest(
                    incident_id=incident, camera_ids=[FIRST], max_seconds=3),
                    metadata=_auth(tokens["police-op"]))
                clip_id = started.clips[0].clip_id
                await sealed(core, clip_id)
                await export_clip(stub, clip_id, out, _auth(tokens["police-op"]))
            with av.open(server.urls[FIRST].replace("rtsp://", "rtsp://viewer:s3cr3t-Pa55@"),
                         options={"rtsp_transport": "tcp"}) as live:
                camera_sets = parameter_sets(bytes(live.streams.video[0].codec_context.extradata or b""))
            assert agent.evidence is not None and not agent.evidence.recorders
    assert encoded == 0 and H264Transcoder.encoders_started == transcoders, "a clip was re-encoded"

    assert main(["evidence", "verify", str(out), str(out / "manifest.json"),
                 "--public-key", str(out / "agent.pub")]) == 0
    body, _ = read_manifest((out / "manifest.json").read_bytes())
    assert (body["camera_id"], body["incident_id"], body["operator_id"]) == (
        FIRST, incident, "police-op")
    assert len(body["segments"]) >= 2
    frames = 0
    for segment in body["segments"]:
        with av.open(str(out / segment["file"])) as clip:
            stream = clip.streams.video[0]
            assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 320, 240)
            assert parameter_sets(bytes(stream.codec_context.extradata or b"")) == camera_sets
            frames += sum(1 for _ in clip.decode(stream))
    assert frames >= 20  # ~3 s at 10 fps

    manifest_hash = hashlib.sha256((out / "manifest.json").read_bytes()).hexdigest()
    assert audit_log.verify(core.audit.db_path).ok
    records = [r.to_dict() for r in audit_log.search(core.audit.db_path, incident_id=incident,
                                                     limit=100)]
    actions = [r["action"] for r in records]
    assert {"evidence.preserve", "evidence.seal", "evidence.export"} <= set(actions)
    seal = next(r for r in records if r["action"] == "evidence.seal")
    assert seal["details"]["manifest_sha256"] == manifest_hash

    refused_when_tampered(out, tmp_path)


def refused_when_tampered(out: Path, tmp_path: Path) -> None:
    def verify(folder: Path, key: Path | None = None) -> int:
        return main(["evidence", "verify", str(folder), str(folder / "manifest.json"),
                     "--public-key", str(key or out / "agent.pub")])

    body, _ = read_manifest((out / "manifest.json").read_bytes())
    first = body["segments"][0]["file"]
    flipped = tmp_path / "flipped"
    shutil.copytree(out, flipped)
    data = bytearray((flipped / first).read_bytes())
    data[len(data) // 2] ^= 0x01
    (flipped / first).write_bytes(bytes(data))
    assert verify(flipped) == 1

    missing = tmp_path / "missing"
    shutil.copytree(out, missing)
    (missing / body["segments"][-1]["file"]).unlink()
    assert verify(missing) == 1

    resigned = tmp_path / "resigned"
    shutil.copytree(out, resigned)
    forged = {k: v for k, v in body.items()
              if k not in ("agent_key_id", "agent_public_key", "version")}
    (resigned / "manifest.json").write_bytes(sign_manifest(forged, Ed25519PrivateKey.generate()))
    assert verify(resigned) == 1


async def test_clip_requests_outside_the_grant_unknown_too_long_or_over_budget_are_refused(
        core: CoreServer, agent_config: AgentConfigFactory, tokens: dict[str, str],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = evidence_settings(tmp_path, disk_budget_bytes=1)
    async with EdgeAgent(agent_config(GANGNAM, cameras=8, evidence=settings)) as agent:
        await _ready(core, 8)
        robbery = (await _report(core, tokens["police-op"], "robbery", GANGNAM_STATION)).incident
        async with grpc.aio.insecure_channel(core.address) as channel:
            stub = core_pb2_grpc.EvidenceServiceStub(channel)

            async def preserve(token: str, cameras: list[str], seconds: float = 2,
                               incident: str = robbery.incident_id) -> grpc.aio.AioRpcError:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Preserve(core_pb2.PreserveEvidenceRequest(
                        incident_id=incident, camera_ids=cameras, max_seconds=seconds),
                        metadata=_auth(tokens[token]))
                return caught.value

            for refused in (await preserve("fire-op", [FIRST]),
                            await preserve("police-op", ["gangnam-007"]),
                            await preserve("police-op", ["no-such-camera"]),
                            await preserve("gangnam-op", [FIRST])):
                assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "outside incident" in (refused.details() or "")
            too_long = await preserve("police-op", [FIRST], seconds=601)
            assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "at most 600 s" in (too_long.details() or "")
            assert not agent.evidence.store.clips

            # A 1-byte budget: the first clip starts, and seals as soon as it sees it is spent.
            first = await stub.Preserve(core_pb2.PreserveEvidenceRequest(
                incident_id=robbery.incident_id, camera_ids=[FIRST], max_seconds=2),
                metadata=_auth(tokens["police-op"]))
            await sealed(core, first.clips[0].clip_id)
            full = await preserve("police-op", [FIRST])
            assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "disk budget" in (full.details() or "") and "no clip is deleted" in (full.details() or "")
            assert list(agent.evidence.store.clips) == [first.clips[0].clip_id]
    records = [r.to_dict() for r in audit_log.search(core.audit.db_path, limit=100)]
    denied = [r for r in records if r["action"] == "evidence.preserve" and r["outcome"] == "denied"]
    # The core's four refusals, and the agent's (its disk budget), each with its reason.
    assert len(denied) == 5
    [agent_said] = [r for r in denied if r["reason"].startswith("the agent refused")]
    assert "disk budget" in agent_said["reason"]
    assert json.dumps(records)  # the record is plain data
