"""The background tasks one long-lived part owns: started here, cancelled and awaited on close.

``BackgroundTasks`` is an async context manager (enter it on the owner's exit stack): ``start()``
keeps every task it creates; leaving cancels them all and waits until each has ended. A task that
fails is logged with its name when it ends, never left for garbage collection to report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, Self

import structlog

log = structlog.get_logger(__name__)


class BackgroundTasks:
    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        """No task can start any more (``close`` has begun)."""
        return self._closed

    def __len__(self) -> int:
        return len(self._tasks)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def start(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task owned here until it ends or ``close()`` cancels it."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._owner} is closed: cannot start {name!r}")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", owner=self._owner, task=task.get_name(),
                      error=repr(task.exception()))

    async def close(self) -> None:
        """Cancel every task and wait for all of them to end; idempotent."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
