"""Bad status payloads are rejected with a reason and change nothing already stored."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from cloud_core.registry import Registry
from cloud_core.status_ingest import StatusIngest
from cloud_core.storage.base import Location
from protos import topics
from protos.safetynet.v1 import mqtt_pb2


def _camera(camera_id: str = "gangnam-001", district: str = "gangnam", lat: float = 37.5,
            lon: float = 127.0, state: int = mqtt_pb2.CAMERA_STATE_ONLINE) -> mqtt_pb2.CameraStatus:
    return mqtt_pb2.CameraStatus(state=state, camera=mqtt_pb2.CameraDescriptor(  # type: ignore[arg-type]
        camera_id=camera_id, district_id=district, name="Gangnam Station", lat=lat, lon=lon))


def _submit(ingest: StatusIngest, topic: str, payload: bytes) -> None:
    ingest.submit(topics.parse(topic), topic, payload)


@pytest.fixture
async def ingest(core_database: Location) -> AsyncIterator[tuple[StatusIngest, Registry]]:
    registry = Registry(core_database)
    async with StatusIngest(registry, max_heartbeat_cameras=10_000) as ingest:
        _submit(ingest, topics.agent_status("gangnam"), mqtt_pb2.AgentStatus(
            district_id="gangnam", agent_id="a", state=mqtt_pb2.AGENT_STATE_ONLINE).SerializeToString())
        _submit(ingest, topics.camera_status("gangnam", "gangnam-001"), _camera().SerializeToString())
        await ingest.drained()
        yield ingest, registry
    registry.close()


@pytest.mark.parametrize(("topic", "payload", "problem"), [
    (topics.camera_status("gangnam", "gangnam-001"), b"\xff\xfe garbage", "not a valid CameraStatus"),
    (topics.camera_status("gangnam", "gangnam-001"), _camera(lat=123.0).SerializeToString(), "impossible coordinates"),
    (topics.camera_status("gangnam", "gangnam-001"), _camera(district="mapo").SerializeToString(), "claims district"),
    (topics.camera_status("gangnam", "gangnam-001"), _camera(camera_id="gangnam-002").SerializeToString(), "on 'gangnam-001'"),
    (topics.camera_status("gangnam", "gangnam-001"), _camera(state=0).SerializeToString(), "no valid state"),
    (topics.agent_status("gangnam"), mqtt_pb2.AgentStatus(district_id="mapo", state=mqtt_pb2.AGENT_STATE_ONLINE).SerializeToString(), "names district"),
    (topics.heartbeat("gangnam"), mqtt_pb2.Heartbeat(district_id="gangnam", cameras=[
        _camera("gangnam-001", lat=10.0), _camera("gangnam-002", lat=float("nan"))]).SerializeToString(),
     "impossible coordinates"),
    # A heartbeat far beyond any district, and one carrying another district's camera.
    (topics.heartbeat("gangnam"), mqtt_pb2.Heartbeat(district_id="gangnam", cameras=[
        _camera(f"gangnam-{i:06d}") for i in range(100_000)]).SerializeToString(),
     "100000 cameras, more than the 10000"),
    (topics.heartbeat("gangnam"), mqtt_pb2.Heartbeat(district_id="gangnam", cameras=[
        _camera("gangnam-002"), _camera("mapo-001", district="mapo")]).SerializeToString(),
     "'mapo-001' claims district 'mapo'"),
])
async def test_bad_payload_is_rejected_and_nothing_changes(ingest, topic: str, payload: bytes, problem: str) -> None:
    handler, registry = ingest
    before = registry.camera("gangnam-001")
    version = registry.camera_version()
    with capture_logs() as logs:
        _submit(handler, topic, payload)
        await handler.drained()
    rejected = [e for e in logs if e["event"] == "rejected status message"]
    assert rejected and problem in rejected[0]["problem"]
    after = registry.camera("gangnam-001")
    assert after is not None and before is not None
    assert (after.lat, after.lon, after.status, after.district_id) == (before.lat, before.lon, before.status, before.district_id)
    assert registry.camera("gangnam-002") is None  # a heartbeat is all-or-nothing
    assert registry.district("gangnam").agent_online
    assert registry.camera_version() == version and handler.rejected == 1


async def test_a_burst_is_written_in_batches_with_the_newest_status_winning(ingest) -> None:
    handler, registry = ingest
    for round_ in range(3):  # three statuses per camera: only the newest may remain
        for i in range(1, 3001):
            state = mqtt_pb2.CAMERA_STATE_OFFLINE if round_ == 2 and i % 2 else mqtt_pb2.CAMERA_STATE_ONLINE
            _submit(handler, topics.camera_status("gangnam", f"gangnam-{i:04d}"),
                    _camera(f"gangnam-{i:04d}", state=state).SerializeToString())
    await handler.drained()
    assert handler.dropped == 0 and handler.rejected == 0
    cameras = registry.list_cameras(district_id="gangnam")
    assert len(cameras) == 3001  # and the fixture's gangnam-001
    assert sum(c.status == "offline" for c in cameras) == 1500


def test_topic_parser_rejects_foreign_topics() -> None:
    for topic in ("safetynet/v2/districts/x/agent/status", "other/thing", "safetynet/v1/districts/x/what"):
        with pytest.raises(ValueError, match="topic"):
            topics.parse(topic)
    assert topics.parse(topics.camera_status("mapo", "mapo-001")) == topics.ParsedTopic(topics.Kind.CAMERA_STATUS, "mapo", "mapo-001")


def _stamped(camera_id: str, state: int, seconds: int) -> mqtt_pb2.CameraStatus:
    status = _camera(camera_id, state=state)
    status.changed_at.FromSeconds(1_700_000_000 + seconds)  # 2023: in the past
    return status


async def test_the_newest_changed_at_wins_whatever_the_arrival_order(ingest) -> None:
    """A district's snapshot (newer) then a camera's own older retained status: the snapshot
    stands, as a restarted core reads them; a newer change after it wins again."""
    handler, registry = ingest
    offline, online = mqtt_pb2.CAMERA_STATE_OFFLINE, mqtt_pb2.CAMERA_STATE_ONLINE
    _submit(handler, topics.heartbeat("gangnam"), mqtt_pb2.Heartbeat(
        district_id="gangnam", cameras=[_stamped("gangnam-001", offline, 20)]).SerializeToString())
    await handler.drained()
    _submit(handler, topics.camera_status("gangnam", "gangnam-001"),
            _stamped("gangnam-001", online, 10).SerializeToString())
    await handler.drained()
    camera = registry.camera("gangnam-001")
    assert camera is not None and camera.status == "offline" and handler.superseded == 1
    _submit(handler, topics.camera_status("gangnam", "gangnam-001"),
            _stamped("gangnam-001", online, 30).SerializeToString())
    await handler.drained()
    camera = registry.camera("gangnam-001")
    assert camera is not None and camera.status == "online"


async def test_a_snapshot_writes_only_the_cameras_that_changed(ingest) -> None:
    handler, registry = ingest
    cameras = [_stamped(f"gangnam-{n:03d}", mqtt_pb2.CAMERA_STATE_ONLINE, 0) for n in range(1, 51)]
    beat = mqtt_pb2.Heartbeat(district_id="gangnam", cameras=cameras)
    _submit(handler, topics.heartbeat("gangnam"), beat.SerializeToString())
    await handler.drained()
    written, unchanged = handler.ingested, handler.unchanged
    beat.cameras[7].CopyFrom(_stamped("gangnam-008", mqtt_pb2.CAMERA_STATE_OFFLINE, 5))
    _submit(handler, topics.heartbeat("gangnam"), beat.SerializeToString())
    await handler.drained()
    assert handler.ingested - written == 1 and handler.unchanged - unchanged == 49
    camera = registry.camera("gangnam-008")
    assert camera is not None and camera.status == "offline"
    assert len(registry.list_cameras(district_id="gangnam")) == 50


async def test_a_changed_at_from_a_clock_far_ahead_orders_nothing(ingest) -> None:
    """A wrong agent clock a day ahead must not freeze the camera at that state for a day."""
    handler, registry = ingest
    ahead = _camera("gangnam-001", state=mqtt_pb2.CAMERA_STATE_OFFLINE)
    ahead.changed_at.GetCurrentTime()
    ahead.changed_at.FromSeconds(ahead.changed_at.seconds + 86_400)
    _submit(handler, topics.camera_status("gangnam", "gangnam-001"), ahead.SerializeToString())
    await handler.drained()
    now = _camera("gangnam-001", state=mqtt_pb2.CAMERA_STATE_ONLINE)
    now.changed_at.GetCurrentTime()
    _submit(handler, topics.camera_status("gangnam", "gangnam-001"), now.SerializeToString())
    await handler.drained()
    camera = registry.camera("gangnam-001")
    assert camera is not None and camera.status == "online" and handler.superseded == 0
