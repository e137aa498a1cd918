"""A district's ``camera_changes`` messages: each one's cameras are written, none replaces
another, and a bad one is refused whole with a reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cloud_core.registry import Registry
from cloud_core.status_ingest import StatusIngest
from protos import topics
from protos.safetynet.v1 import mqtt_pb2

CHANGES = topics.camera_changes("gangnam")
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def status(camera_id: str, state: int = mqtt_pb2.CAMERA_STATE_ONLINE,
           district: str = "gangnam", at: datetime = T0) -> mqtt_pb2.CameraStatus:
    message = mqtt_pb2.CameraStatus(state=state, camera=mqtt_pb2.CameraDescriptor(  # type: ignore[arg-type]
        camera_id=camera_id, district_id=district, name=camera_id, lat=37.5, lon=127.0))
    message.changed_at.FromDatetime(at)
    return message


def changes(*cameras: mqtt_pb2.CameraStatus, district: str = "gangnam") -> bytes:
    return mqtt_pb2.CameraChanges(district_id=district, cameras=cameras).SerializeToString()


def submit(ingest: StatusIngest, topic: str, payload: bytes) -> None:
    ingest.submit(topics.parse(topic), topic, payload)


@pytest.fixture
async def ingest(tmp_path: Path) -> AsyncIterator[tuple[StatusIngest, Registry]]:
    registry = Registry(tmp_path / "r.sqlite3")
    async with StatusIngest(registry, max_heartbeat_cameras=100) as ingest:
        submit(ingest, topics.agent_status("gangnam"), mqtt_pb2.AgentStatus(
            district_id="gangnam", agent_id="a",
            state=mqtt_pb2.AGENT_STATE_ONLINE).SerializeToString())
        yield ingest, registry
    registry.close()


async def test_every_change_message_is_written_none_replaces_another(ingest) -> None:
    handler, registry = ingest
    offline = mqtt_pb2.CAMERA_STATE_OFFLINE
    # Three messages on one topic, staged before the writer runs: a per-topic "newest only"
    # would keep the last and lose gangnam-001..040.
    submit(handler, CHANGES, changes(*(status(f"gangnam-{i:03d}") for i in range(1, 41))))
    submit(handler, CHANGES, changes(*(status(f"gangnam-{i:03d}") for i in range(41, 81))))
    later = T0 + timedelta(seconds=1)
    submit(handler, CHANGES, changes(status("gangnam-001", offline, at=later)))
    await handler.drained()
    assert handler.ingested == 81 and handler.rejected == 0
    assert len(registry.list_cameras(district_id="gangnam")) == 80
    first = registry.camera("gangnam-001")
    assert first is not None and first.status == "offline"
    # An older change arriving late does not undo the newer one.
    submit(handler, CHANGES, changes(status("gangnam-001", at=T0)))
    await handler.drained()
    first = registry.camera("gangnam-001")
    assert first is not None and first.status == "offline" and handler.superseded == 1


@pytest.mark.parametrize(("payload", "problem"), [
    (b"\xff\xfe garbage", "not a valid CameraChanges"),
    (changes(status("gangnam-001"), district="mapo"), "names district 'mapo'"),
    (changes(status("gangnam-001"), status("mapo-001", district="mapo")),
     "'mapo-001' claims district 'mapo'"),
    (changes(status("gangnam-001"), status("gangnam-001")), "lists a camera more than once"),
    (changes(*(status(f"gangnam-{i:03d}") for i in range(101))), "101 cameras, more than the 100"),
])
async def test_a_bad_change_message_is_refused_whole(ingest, payload: bytes, problem: str) -> None:
    handler, registry = ingest
    submit(handler, CHANGES, changes(status("gangnam-050")))
    await handler.drained()
    version = registry.camera_version()
    with capture_logs() as logs:
        submit(handler, CHANGES, payload)
        await handler.drained()
    rejected = [e for e in logs if e["event"] == "rejected status message"]
    assert rejected and problem in rejected[0]["problem"], rejected
    assert registry.camera("gangnam-001") is None  # all or nothing
    assert registry.camera_version() == version and handler.rejected == 1
