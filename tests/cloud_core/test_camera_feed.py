"""``CameraFeed``: where a follower starts, given a snapshot that may be ahead of the pushes
(on both backends)."""

from __future__ import annotations

from datetime import UTC, datetime

from cloud_core.camera_feed import CameraFeed
from cloud_core.registry import CameraUpdate, Registry
from cloud_core.storage.base import Location


def _camera(camera_id: str, status: str = "online") -> CameraUpdate:
    return CameraUpdate(camera_id, "gangnam", camera_id, 37.5, 127.0, "simulated", status, "", "",
                        0, datetime.now(UTC))


async def test_a_snapshot_newer_than_the_last_push_follows_without_a_reset(
    core_database: Location,
) -> None:
    # The snapshot is read from the registry, which runs up to one push interval ahead of the
    # feed: a console holding it must be followed, not told to refetch (the old "stream ended").
    registry = Registry(core_database)
    registry.upsert_cameras([_camera("cam-1"), _camera("cam-2")])
    async with CameraFeed(registry, interval=60) as feed:
        registry.upsert_cameras([_camera("cam-1", "offline")])  # committed, not yet pushed
        snapshot = await feed.snapshot()
        assert snapshot.version == registry.camera_version() > feed.version
        _, upto, reset = feed.start(snapshot.version)
        assert not reset
        assert await feed.catch_up(snapshot.version, upto) == ""
    registry.close()


async def test_a_follower_behind_the_feed_catches_up_with_what_changed(
    core_database: Location,
) -> None:
    registry = Registry(core_database)
    registry.upsert_cameras([_camera("cam-1"), _camera("cam-2")])
    since = registry.camera_version()
    registry.upsert_cameras([_camera("cam-2", "offline")])
    async with CameraFeed(registry) as feed:
        _, upto, reset = feed.start(since)
        data = await feed.catch_up(since, upto)
        assert not reset and data is not None and '"cam-2"' in data and '"cam-1"' not in data
        _, _, reset = feed.start(registry.camera_version() + 1)  # another core's version
        assert reset
    registry.close()
