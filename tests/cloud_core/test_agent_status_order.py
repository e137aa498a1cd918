"""An agent's status is ordered by the connection it belongs to (``AgentStatus.connected_at``): a
late last will of a connection the agent has replaced changes nothing, the will of the current
connection still takes the district offline, and agents that do not say are applied as their
statuses arrive. Decided in SQL, so on both backends and whichever replica writes."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloud_core.registry import Registry
from cloud_core.status_ingest import StatusIngest
from cloud_core.storage.base import Location
from cloud_core.storage.database import Database
from protos import topics
from protos.safetynet.v1 import mqtt_pb2

ONLINE, OFFLINE = mqtt_pb2.AGENT_STATE_ONLINE, mqtt_pb2.AGENT_STATE_OFFLINE
AT = datetime(2026, 12, 1, 9, tzinfo=UTC)


def _status(state: int, connected_at: datetime | None) -> bytes:
    status = mqtt_pb2.AgentStatus(district_id="gangnam", agent_id="gangnam-agent",
                                  state=state)  # type: ignore[arg-type]
    if connected_at is not None:
        status.connected_at.FromDatetime(connected_at)
    return status.SerializeToString()


@pytest.fixture
async def ingest(core_database: Location) -> AsyncIterator[tuple[StatusIngest, Registry]]:
    registry = Registry(core_database)
    async with StatusIngest(registry) as ingest:
        yield ingest, registry
    registry.close()


async def _say(ingest: StatusIngest, *payloads: bytes) -> None:
    """Each payload in a batch of its own, in this order (as they arrive apart in time)."""
    topic = topics.agent_status("gangnam")
    for payload in payloads:
        ingest.submit(topics.parse(topic), topic, payload)
        await ingest.drained()


def _online(registry: Registry) -> bool:
    district = registry.district("gangnam")
    assert district is not None
    return district.agent_online


async def test_a_late_will_of_an_older_connection_is_ignored(ingest) -> None:
    handler, registry = ingest
    first, second = AT, AT + timedelta(seconds=3)
    await _say(handler, _status(ONLINE, first), _status(ONLINE, second), _status(OFFLINE, first))
    assert _online(registry)


async def test_the_will_of_the_current_connection_applies(ingest) -> None:
    handler, registry = ingest
    first, second = AT, AT + timedelta(seconds=3)
    await _say(handler, _status(ONLINE, first), _status(ONLINE, second), _status(OFFLINE, second))
    assert not _online(registry)
    # And a reconnect after it is online again.
    await _say(handler, _status(ONLINE, second + timedelta(seconds=1)))
    assert _online(registry)


async def test_within_one_connection_offline_beats_online(ingest) -> None:
    """A connection's offline (its will, or a clean stop) comes after its online: an online
    of the same connection arriving after it (retained, replayed) is the older word."""
    handler, registry = ingest
    await _say(handler, _status(OFFLINE, AT), _status(ONLINE, AT))
    assert not _online(registry)


async def test_a_connected_at_from_a_clock_far_ahead_orders_nothing(ingest) -> None:
    """A will stamped a day ahead is applied as it arrives, but must not freeze the district
    offline for a day: the next connection, stamped by a right clock, is online again."""
    handler, registry = ingest
    now = datetime.now(UTC)
    await _say(handler, _status(ONLINE, now - timedelta(seconds=5)),
               _status(OFFLINE, now + timedelta(days=1)))
    assert not _online(registry)
    await _say(handler, _status(ONLINE, now))
    assert _online(registry)


async def test_agents_without_connected_at_apply_as_they_arrive(ingest) -> None:
    handler, registry = ingest
    await _say(handler, _status(ONLINE, None), _status(OFFLINE, None))
    assert not _online(registry)
    await _say(handler, _status(ONLINE, None))
    assert _online(registry)
    # Even after a newer agent's stamped status: an undated one orders nothing.
    await _say(handler, _status(ONLINE, AT), _status(OFFLINE, None))
    assert not _online(registry)


async def test_an_ignored_will_leaves_the_cameras_version_alone(ingest) -> None:
    """Nothing shown changed, so consoles get no push for it."""
    handler, registry = ingest
    camera = mqtt_pb2.CameraStatus(state=mqtt_pb2.CAMERA_STATE_ONLINE, camera=mqtt_pb2.CameraDescriptor(
        camera_id="gangnam-001", district_id="gangnam", name="Gangnam Station", lat=37.5, lon=127.0))
    topic = topics.camera_status("gangnam", "gangnam-001")
    await _say(handler, _status(ONLINE, AT), _status(ONLINE, AT + timedelta(seconds=3)))
    handler.submit(topics.parse(topic), topic, camera.SerializeToString())
    await handler.drained()
    version = registry.camera_version()
    await _say(handler, _status(OFFLINE, AT))
    assert registry.camera_version() == version
    record = registry.camera("gangnam-001")
    assert record is not None and record.effective_status == "online"


def test_two_replicas_agree_whichever_writes_the_late_will(
        two_replicas: tuple[Database, Database]) -> None:
    """Each replica ingests the same statuses; one that reads the old will late (its own MQTT
    backlog) must not undo the newer connection another replica wrote."""
    first, second = (Registry(db) for db in two_replicas)
    seen = datetime.now(UTC)
    first.set_agent("gangnam", "Gangnam-gu", "gangnam-agent", True, "1", seen, connected_at=AT)
    first.set_agent("gangnam", "Gangnam-gu", "gangnam-agent", True, "1", seen,
                    connected_at=AT + timedelta(seconds=3))
    second.set_agent("gangnam", "Gangnam-gu", "gangnam-agent", False, "1", seen, connected_at=AT)
    district = second.district("gangnam")
    assert district is not None and district.agent_online
    second.close()
    first.close()


def test_an_old_sqlite_registry_gets_the_connection_column(tmp_path: Path) -> None:
    path = tmp_path / "core.sqlite3"
    with sqlite3.connect(path) as old:  # districts as the pilot made them
        old.execute("CREATE TABLE districts (district_id TEXT PRIMARY KEY, name TEXT NOT NULL, "
                    "agent_id TEXT NOT NULL DEFAULT '', agent_online INTEGER NOT NULL DEFAULT 0, "
                    "software_version TEXT NOT NULL DEFAULT '', last_seen TEXT)")
        old.execute("INSERT INTO districts (district_id, name, agent_online) "
                    "VALUES ('gangnam', 'Gangnam-gu', 1)")
    old.close()
    registry = Registry(path)
    seen = datetime.now(UTC)
    registry.set_agent("gangnam", "Gangnam-gu", "gangnam-agent", True, "1", seen,
                       connected_at=AT + timedelta(seconds=3))
    registry.set_agent("gangnam", "Gangnam-gu", "gangnam-agent", False, "1", seen, connected_at=AT)
    district = registry.district("gangnam")
    assert district is not None and district.agent_online
    registry.close()


async def test_a_late_will_staged_with_the_new_online_in_one_batch_is_ignored(ingest) -> None:
    """Both arrive before the writer runs: each keeps its own slot, so the will cannot replace
    the new connection's online unseen."""
    handler, registry = ingest
    first, second = AT, AT + timedelta(seconds=3)
    await _say(handler, _status(ONLINE, first))
    topic = topics.agent_status("gangnam")
    for payload in (_status(ONLINE, second), _status(OFFLINE, first)):
        handler.submit(topics.parse(topic), topic, payload)
    await handler.drained()
    assert _online(registry)
