"""``GET /api/events``: incidents as they change, pushed to the console (Server-Sent Events).

One stream per signed-in console. Each event is ``data: {"kind", "incident"}`` with the incident
as the caller may see it (events on incidents the caller may not see are never sent). A comment
line every 15 s keeps proxies from closing an idle stream; a token disabled on the core ends the
stream at the next event or keep-alive.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Final

from aiohttp import web

from cloud_core.access import AccessService
from cloud_core.console.api import incident_json
from cloud_core.console.bearer import authenticate, bearer_token
from cloud_core.console.dispatch_api import dispatch_json
from cloud_core.exceptions import IncidentNotFound, Unauthenticated
from cloud_core.policy import Role

KEEPALIVE_SECONDS: Final = 15.0


class EventStream:
    def __init__(self, access: AccessService) -> None:
        self._access = access

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/events", self.stream)]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        authenticate(self._access, request)
        token = bearer_token(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(b": connected\n\n")
        async with self._access.events.subscribe() as queue:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                try:
                    caller = self._access.authenticate(token, request.remote or "")
                    report = self._access.get_incident(caller, event.incident_id)
                except Unauthenticated:
                    break
                except IncidentNotFound:
                    if event.kind == "dispatch" and caller.operator.role is Role.FIELD:
                        # The room unassigned this officer: their page drops the incident.
                        ended = {"kind": "unassigned", "incident_id": event.incident_id}
                        await response.write(f"data: {json.dumps(ended)}\n\n".encode())
                    continue
                payload: dict[str, object] = {"kind": event.kind, "incident": incident_json(
                    report.incident, self._access, datetime.now(UTC))}
                if event.kind == "dispatch":
                    payload["dispatch"] = dispatch_json(self._access, caller, event.incident_id)
                await response.write(f"data: {json.dumps(payload)}\n\n".encode())
        return response
