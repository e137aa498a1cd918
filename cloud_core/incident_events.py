"""What happens to incidents, pushed to whoever watches: the consoles' server-sent events.

:class:`IncidentEvents` is a small in-process hub. Each subscriber gets its own bounded queue;
when a slow subscriber's queue is full the oldest event is dropped (and logged), so a stalled
console never holds up a report or a move. Events carry only the incident id and what happened;
each subscriber reads the incident itself, as the caller it is, so visibility is decided once,
in the access layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import structlog

log = structlog.get_logger(__name__)

QUEUE_SIZE: Final = 256
KINDS: Final = ("reported", "moved", "linked", "extended", "closed", "dispatch")


@dataclass(frozen=True)
class IncidentEvent:
    kind: str            # one of KINDS
    incident_id: str


class IncidentEvents:
    """Publish incident events to every current subscriber, never blocking the publisher."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[IncidentEvent]] = set()

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    def publish(self, kind: str, incident_id: str) -> None:
        event = IncidentEvent(kind, incident_id)
        for queue in self._queues:
            if queue.full():
                dropped = queue.get_nowait()
                log.warning("incident event queue full, dropping oldest", kind=dropped.kind,
                            incident=dropped.incident_id)
            queue.put_nowait(event)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[IncidentEvent]]:
        queue: asyncio.Queue[IncidentEvent] = asyncio.Queue(QUEUE_SIZE)
        self._queues.add(queue)
        try:
            yield queue
        finally:
            self._queues.discard(queue)
