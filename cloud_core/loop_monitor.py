"""``LoopMonitor``: measures, all the time, how late the event loop runs a timer.

Every ``interval`` it sleeps and compares when it woke with when it asked to: the difference is
time some callback held the loop. Observed into a histogram; the worst of each window is a gauge
and, above ``warn_after`` seconds, a WARNING (at most one per window) naming the lag.
"""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Self

import structlog

from cloud_core.metrics import CoreMetrics

log = structlog.get_logger(__name__)


class LoopMonitor:
    def __init__(self, metrics: CoreMetrics, *, interval: float = 0.05, window: float = 10.0,
                 warn_after: float = 0.1) -> None:
        self._metrics = metrics
        self._interval = interval
        self._window = window
        self._warn_after = warn_after
        self._task: asyncio.Task[None] | None = None
        self.worst = 0.0          # worst lag of the current window, seconds
        self.worst_ever = 0.0
        self._worst_since_mark = 0.0

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name="loop-monitor")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def mark(self) -> float:
        """The worst lag since the previous ``mark()`` (seconds); starts a new span."""
        worst, self._worst_since_mark = self._worst_since_mark, 0.0
        return worst

    async def _run(self) -> None:
        window_end = time.monotonic() + self._window
        warned = False
        while True:
            asked = time.monotonic()
            await asyncio.sleep(self._interval)
            lag = max(0.0, time.monotonic() - asked - self._interval)
            self._metrics.loop_lag.observe(lag)
            self.worst = max(self.worst, lag)
            self.worst_ever = max(self.worst_ever, lag)
            self._worst_since_mark = max(self._worst_since_mark, lag)
            if lag > self._warn_after and not warned:
                warned = True
                log.warning("event loop held", lag_ms=round(lag * 1000, 1))
            if time.monotonic() >= window_end:
                self._metrics.loop_lag_max.set(self.worst)
                self.worst, warned = 0.0, False
                window_end = time.monotonic() + self._window
