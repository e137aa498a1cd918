"""HTTP endpoints for system feeds (not people): the carriers' wearable platform.

    POST /api/feeds/wearables   {event: sos|geofence-exit|position, subject_id, subject_kind?,
                                 lat, lon, at?, event_id?}
        201 {incident_id, opened: true}  an SOS or exit opened an incident
        200 {incident_id, opened: false} it moved the subject's open incident
        404 a position for a subject with no open incident (nothing is kept)

The caller is a feed client's bearer token (role ``feed``); errors are JSON like every API error.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from cloud_core.access import AccessService
from cloud_core.console.bearer import authenticate
from cloud_core.exceptions import InvalidRequest
from cloud_core.wearables import WearableEvent, WearableFeed


class FeedEndpoints:
    def __init__(self, access: AccessService) -> None:
        self._access = access
        self._wearables = WearableFeed(access, access.registry.db)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/api/feeds/wearables", self.wearable_event)]

    async def wearable_event(self, request: web.Request) -> web.Response:
        caller = authenticate(self._access, request)
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidRequest(f"the request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        outcome = await self._wearables.ingest(caller, WearableEvent.from_json(body))
        incident = outcome.incident.incident.incident
        return web.json_response(
            {"incident_id": incident.incident_id, "opened": outcome.opened,
             "cameras": [c.camera_id for c in outcome.incident.cameras[:5]]},
            status=201 if outcome.opened else 200)
