"""One relayed camera in the city's cloud: one stream from the district, many viewers from here.

``CloudRelay`` is the agent's own code in relay mode (docs/cloud-relay.md): a ``CameraFeed``
whose source is a ``RelaySource`` (the district's WebRTC stream, pulled once) and one
``ViewerSession`` per viewer, exactly as at a district. When the district ends the upstream
session — the core revoked its grant because the incident closed — the feed fails, and the relay
stops: every viewer's session is closed and no new one is taken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import structlog

from edge_agent.camera_feed import CameraFeed, FeedHealth, FeedState
from edge_agent.camera_sources.relay import CloseUpstream, OpenUpstream, RelaySource
from edge_agent.exceptions import OfferRejected
from edge_agent.viewer_session import ViewerSession
from protos.safetynet.v1 import mqtt_pb2
from runtime.background import BackgroundTasks
from runtime.webrtc import WebRtcSettings

log = structlog.get_logger(__name__)

#: Told when one viewer's session ends (the relay process reports it to the core).
ViewerClosed = Callable[[ViewerSession, str], Awaitable[None]]


class CloudRelay:
    def __init__(self, camera_id: str, *, webrtc: WebRtcSettings, open_upstream: OpenUpstream,
                 close_upstream: CloseUpstream, session_seconds: float = 3600.0,
                 on_viewer_closed: ViewerClosed | None = None) -> None:
        self.camera_id = camera_id
        self.source = RelaySource(camera_id, webrtc=webrtc, open_upstream=open_upstream,
                                  close_upstream=close_upstream)
        self.feed = CameraFeed(self.source, idle_close_seconds=0.0, on_health=self._on_health)
        self.sessions: dict[str, ViewerSession] = {}
        self.stopped = asyncio.Event()  # set once every viewer is closed and the upstream ended
        self.live = asyncio.Event()     # set once the first picture came down from the district
        self._on_viewer_closed = on_viewer_closed
        self._stopping = False
        self._webrtc = webrtc
        self._session_seconds = session_seconds
        self._was_live = False
        self._tasks = BackgroundTasks(f"relay:{camera_id}")
        self._log = log.bind(camera=camera_id)

    async def __aenter__(self) -> Self:
        await self.feed.__aenter__()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def add_viewer(self, session_id: str, sdp_offer: str,
                         expires_at: datetime | None = None) -> str:
        """Answer one more viewer from the relay's feed (until ``expires_at``, its grant's end)."""
        if self._stopping:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_CAMERA_OFFLINE, "the relay has stopped")
        cap = datetime.now(UTC) + timedelta(seconds=self._session_seconds)
        session = ViewerSession(
            session_id=session_id, camera_id=self.camera_id, feed=self.feed, webrtc=self._webrtc,
            expires_at=min(expires_at, cap) if expires_at is not None else cap,
            on_closed=self._on_closed)
        self.sessions[session_id] = session
        try:
            return await session.answer(sdp_offer)
        except BaseException:
            self.sessions.pop(session_id, None)
            raise

    async def stop(self, reason: str) -> None:
        """Close every viewer and the upstream; idempotent."""
        if self._stopping:
            return
        self._stopping = True
        self._log.info("relay stopping", reason=reason, viewers=len(self.sessions))
        for session in list(self.sessions.values()):
            await session.close(reason)
        await self.feed.close()
        self.stopped.set()

    async def close(self) -> None:
        await self.stop("relay closing")
        await self._tasks.close()

    async def _on_closed(self, session: ViewerSession, reason: str) -> None:
        self.sessions.pop(session.session_id, None)
        if self._on_viewer_closed is not None:
            await self._on_viewer_closed(session, reason)

    async def _on_health(self, camera_id: str, health: FeedHealth) -> None:
        if health.state is FeedState.LIVE:
            self._was_live = True
            self.live.set()
        elif health.state is FeedState.FAILED and self._was_live:
            self._tasks.start(self.stop(f"the district ended the relayed stream ({health.reason})"),
                              name=f"relay-stop:{camera_id}")
