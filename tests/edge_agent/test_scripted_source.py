"""The camera feed against a scripted camera: given packets, given faults at given points."""

from __future__ import annotations

import asyncio

import pytest

from edge_agent.camera_feed import CameraFeed, FeedHealth, FeedState, FeedSubscription
from edge_agent.camera_sources.scripted import Fault, ScriptedSource, frame, gop


async def _keys(subscription: FeedSubscription, count: int) -> list[bool]:
    """Whether each of the next ``count`` packets is a key frame (IDR NAL)."""
    keys = []
    for _ in range(count):
        async with asyncio.timeout(2):
            packet = await subscription.get()
        assert packet is not None
        keys.append(bytes(packet)[4] == 0x65)
    return keys


class _Health:
    def __init__(self) -> None:
        self.seen: list[FeedHealth] = []

    async def __call__(self, camera_id: str, health: FeedHealth) -> None:
        self.seen.append(health)

    @property
    def states(self) -> list[FeedState]:
        return [h.state for h in self.seen]


async def test_one_pull_serves_every_viewer_and_a_late_one_starts_at_the_key_frame() -> None:
    source = ScriptedSource("cam-1", [gop(0, 4)])
    async with CameraFeed(source) as feed:
        first = feed.subscribe()
        await source.played()
        assert await _keys(first, 4) == [True, False, False, False]
        late = feed.subscribe()  # mid-GOP: the cached GOP, from its key frame
        assert await _keys(late, 4) == [True, False, False, False]
        assert (source.opens, feed.cached_packets) == (1, 4)


async def test_a_fault_mid_stream_is_reported_and_the_next_connection_recovers() -> None:
    health = _Health()
    source = ScriptedSource("cam-1", [[*gop(0, 3), Fault("stalled", "no packet for 5 s")],
                                      gop(3, 2)])
    async with CameraFeed(source, on_health=health, retry_initial=0.01) as feed:
        viewer = feed.subscribe()
        assert await _keys(viewer, 3) == [True, False, False]
        await source.played(2)
        assert await _keys(viewer, 2) == [True, False]  # after the fault: from a key frame
        assert source.opens == 2 and source.closes == 1
    assert health.states[:5] == [FeedState.STARTING, FeedState.LIVE, FeedState.FAILED,
                                 FeedState.STARTING, FeedState.LIVE]
    assert (health.seen[2].reason, health.seen[2].detail) == ("stalled", "no packet for 5 s")


async def test_a_camera_that_refuses_at_once_never_goes_live() -> None:
    health = _Health()
    source = ScriptedSource("cam-1", [[Fault("unauthorized", "401 from the camera")]])
    async with CameraFeed(source, on_health=health, retry_initial=0.01) as feed:
        feed.subscribe()
        await source.played(3)  # it keeps retrying while someone watches
    assert FeedState.LIVE not in health.states
    assert {h.reason for h in health.seen if h.state is FeedState.FAILED} == {"unauthorized"}
    assert source.yielded == 0


async def test_a_stream_that_ends_is_a_stopped_camera() -> None:
    health = _Health()
    source = ScriptedSource("cam-1", [gop(0, 2)], then_end=True)
    async with CameraFeed(source, on_health=health, retry_initial=0.01) as feed:
        viewer = feed.subscribe()
        assert await _keys(viewer, 2) == [True, False]
        await source.played(2)
    failed = [h for h in health.seen if h.state is FeedState.FAILED]
    assert failed and failed[0].reason == "stopped"


async def test_deltas_before_the_first_key_frame_are_not_sent() -> None:
    source = ScriptedSource("cam-1", [[frame(0, keyframe=False), frame(1, keyframe=False),
                                       *gop(2, 2)]])
    async with CameraFeed(source) as feed:
        viewer = feed.subscribe()
        await source.played()
        assert await _keys(viewer, 2) == [True, False]
        assert viewer.queue.empty()


def test_a_source_needs_a_script() -> None:
    with pytest.raises(ValueError, match="at least one script"):
        ScriptedSource("cam-1", [])
