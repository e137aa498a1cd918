"""CameraFeed with an in-memory source (the thing under test is the feed, not a camera)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from fractions import Fraction

import pytest

from edge_agent.camera_feed import CameraFeed, FeedHealth, FeedState, FeedSubscription
from edge_agent.camera_sources.base import CameraSource, EncodedPacket
from edge_agent.exceptions import SourceError

TB = Fraction(1, 90_000)


class ScriptedSource(CameraSource):
    """Emits packets pushed by the test: ``push(keyframe)``; ``fail(reason)`` raises SourceError."""

    kind = "scripted"

    def __init__(self) -> None:
        self.camera_id = "cam-1"
        self.opens = 0
        self.closes = 0
        self._queue: asyncio.Queue[EncodedPacket | str] = asyncio.Queue()
        self._pts = 0
        self._taken = 0
        self._progress = asyncio.Condition()

    async def fanned_out(self, count: int) -> None:
        """Wait until the feed has handed ``count`` packets to its viewers (it then asks again)."""
        async with asyncio.timeout(2), self._progress:
            await self._progress.wait_for(lambda: self._taken >= count)

    def push(self, keyframe: bool) -> None:
        self._pts += 6000
        self._queue.put_nowait(EncodedPacket(b"\x00\x00\x00\x01" + (b"\x65" if keyframe else b"\x41"),
                                             self._pts, TB, keyframe))

    def fail(self, reason: str) -> None:
        self._queue.put_nowait(reason)

    async def packets(self) -> AsyncGenerator[EncodedPacket, None]:
        self.opens += 1
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, str):
                    raise SourceError(self.camera_id, item, "scripted failure")
                yield item
                async with self._progress:
                    self._taken += 1
                    self._progress.notify_all()
        finally:
            self.closes += 1


async def _drain(subscription: FeedSubscription, count: int) -> list[bool]:
    keys = []
    for _ in range(count):
        async with asyncio.timeout(2):
            packet = await subscription.get()
        assert packet is not None
        keys.append(bytes(packet)[4] == 0x65)
    return keys


async def test_one_source_for_many_viewers_and_gop_cache_for_late_ones() -> None:
    source = ScriptedSource()
    async with CameraFeed(source, idle_close_seconds=10) as feed:
        first = feed.subscribe()
        second = feed.subscribe()
        source.push(True)
        for _ in range(3):
            source.push(False)
        assert await _drain(first, 4) == [True, False, False, False]
        assert await _drain(second, 4) == [True, False, False, False]
        late = feed.subscribe()  # mid-GOP: gets key frame + the three deltas at once
        assert await _drain(late, 4) == [True, False, False, False]
        assert source.opens == 1


async def test_viewer_before_first_key_frame_skips_deltas() -> None:
    source = ScriptedSource()
    async with CameraFeed(source) as feed:
        subscription = feed.subscribe()
        source.push(False)
        source.push(True)
        assert await _drain(subscription, 1) == [True]


async def test_closes_source_after_idle_time_and_reopens_on_demand() -> None:
    source = ScriptedSource()
    states: list[FeedState] = []
    idle = asyncio.Event()

    async def on_health(camera_id: str, health: FeedHealth) -> None:
        states.append(health.state)
        if health.state is FeedState.IDLE:
            idle.set()

    async with CameraFeed(source, idle_close_seconds=0.05, on_health=on_health) as feed:
        subscription = feed.subscribe()
        source.push(True)
        await _drain(subscription, 1)
        subscription.unsubscribe()
        async with asyncio.timeout(2):
            await idle.wait()
        assert not feed.streaming
        assert source.closes == 1 and feed.health.state is FeedState.IDLE
        again = feed.subscribe()
        source.push(True)
        await _drain(again, 1)
        assert source.opens == 2
    assert states[:3] == [FeedState.STARTING, FeedState.LIVE, FeedState.IDLE]


async def test_source_failure_is_reported_and_retried() -> None:
    source = ScriptedSource()
    failures: list[FeedHealth] = []

    async def on_health(camera_id: str, health: FeedHealth) -> None:
        if health.state is FeedState.FAILED:
            failures.append(health)

    async with CameraFeed(source, on_health=on_health, retry_initial=0.01) as feed:
        subscription = feed.subscribe()
        source.push(True)
        await _drain(subscription, 1)
        source.fail("stalled")
        source.push(True)  # picked up by the second connection
        assert await _drain(subscription, 1) == [True]
        assert failures[0].reason == "stalled"
        assert source.opens == 2


async def test_slow_viewer_skips_to_next_key_frame_without_hurting_others() -> None:
    source = ScriptedSource()
    async with CameraFeed(source, subscriber_queue=4) as feed:
        slow = feed.subscribe()
        fast = feed.subscribe()
        source.push(True)
        for _ in range(6):
            source.push(False)
            await asyncio.sleep(0)
            if not fast.queue.empty():
                await _drain(fast, fast.queue.qsize())
        await source.fanned_out(7)
        assert slow.waiting_for_keyframe and slow.dropped > 0
        source.push(True)
        assert await _drain(slow, 1) == [True]


async def test_closed_feed_ends_subscriptions() -> None:
    source = ScriptedSource()
    feed = CameraFeed(source)
    subscription = feed.subscribe()
    await feed.close()
    await feed.close()
    assert await subscription.get() is None
    with pytest.raises(RuntimeError):
        feed.subscribe()


async def test_a_sender_takes_what_is_queued_at_once_and_the_end_after_it() -> None:
    source = ScriptedSource()
    feed = CameraFeed(source, subscriber_queue=8)
    subscription = feed.subscribe()
    source.push(True)
    source.push(False)
    first = await _drain(subscription, 1)
    source.push(False)
    await source.fanned_out(3)
    await feed.close()
    ready = subscription.take_ready()  # both deltas, not the end-of-feed marker
    assert first == [True] and [bytes(u)[4] for u in ready] == [0x41, 0x41]
    assert [u.payloads for u in ready] == [(b"\x41",), (b"\x41",)]  # packetized once, by the feed
    assert subscription.take_ready() == []
    assert await subscription.get() is None
    assert await subscription.get() is None
