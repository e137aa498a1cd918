"""112 dispatch over HTTP: the room's actions and the officers' phone page.

    POST /api/incidents/{id}/dispatch/assign     {officer_id}     (the 112 room)
    POST /api/incidents/{id}/dispatch/unassign   {officer_id}
    POST /api/incidents/{id}/dispatch/still      {camera_id}      a JPEG taken at the agent
    POST /api/incidents/{id}/dispatch/camera     {camera_id}      hand a live camera off
    GET  /api/incidents/{id}/dispatch            officers and pushes (room, assigned officers)
    GET  /api/dispatch/mine                      an officer's incidents with their pushes
    GET  /api/dispatch/officers                  the room's agency's field officers (to assign)
    GET  /api/dispatch/stills/{push_id}          the still's JPEG
    GET  /officer                                the phone-sized page officers use

Pushes reach officers' pages over ``GET /api/events`` (kind ``dispatch``) as they happen.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from cloud_core.access import AccessService, Caller
from cloud_core.console.api import incident_json
from cloud_core.console.bearer import authenticate
from cloud_core.dispatch import DispatchPush
from cloud_core.exceptions import InvalidRequest
from cloud_core.timestamps import iso


def push_json(push: DispatchPush) -> dict[str, Any]:
    return {"push_id": push.push_id, "kind": push.kind, "camera_id": push.camera_id,
            "at": iso(push.at), "sha256": push.sha256, "bytes": push.bytes,
            "pushed_by": push.pushed_by,
            "url": f"/api/dispatch/stills/{push.push_id}" if push.kind == "still" else None}


def dispatch_json(access: AccessService, caller: Caller, incident_id: str) -> dict[str, Any]:
    officers, pushes = access.dispatch_state(caller, incident_id)
    return {"incident_id": incident_id, "officers": officers,
            "pushes": [push_json(p) for p in pushes]}


async def _field(request: web.Request, key: str) -> str:
    try:
        body: Any = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the request body is not JSON: {exc}") from exc
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value.strip() or len(value) > 128:
        raise InvalidRequest(f"{key} is required (a string of at most 128 characters)")
    return value.strip()


class DispatchApi:
    def __init__(self, access: AccessService) -> None:
        self._access = access

    def routes(self) -> list[web.RouteDef]:
        prefix = "/api/incidents/{incident_id}/dispatch"
        return [
            web.post(f"{prefix}/assign", self.assign),
            web.post(f"{prefix}/unassign", self.unassign),
            web.post(f"{prefix}/still", self.still),
            web.post(f"{prefix}/camera", self.camera),
            web.get(prefix, self.state),
            web.get("/api/dispatch/mine", self.mine),
            web.get("/api/dispatch/officers", self.officers),
            web.get("/api/dispatch/stills/{push_id}", self.still_jpeg),
        ]

    def _caller(self, request: web.Request) -> Caller:
        return authenticate(self._access, request)

    async def assign(self, request: web.Request) -> web.Response:
        caller, incident_id = self._caller(request), request.match_info["incident_id"]
        await self._access.assign_officer(caller, incident_id, await _field(request, "officer_id"))
        return web.json_response(dispatch_json(self._access, caller, incident_id))

    async def unassign(self, request: web.Request) -> web.Response:
        caller, incident_id = self._caller(request), request.match_info["incident_id"]
        await self._access.unassign_officer(caller, incident_id,
                                            await _field(request, "officer_id"))
        return web.json_response(dispatch_json(self._access, caller, incident_id))

    async def still(self, request: web.Request) -> web.Response:
        caller, incident_id = self._caller(request), request.match_info["incident_id"]
        push = await self._access.push_still(caller, incident_id,
                                             await _field(request, "camera_id"))
        return web.json_response(push_json(push), status=201)

    async def camera(self, request: web.Request) -> web.Response:
        caller, incident_id = self._caller(request), request.match_info["incident_id"]
        push = await self._access.hand_off_camera(caller, incident_id,
                                                  await _field(request, "camera_id"))
        return web.json_response(push_json(push), status=201)

    async def state(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        return web.json_response(dispatch_json(self._access, caller,
                                               request.match_info["incident_id"]))

    async def mine(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        now = datetime.now(UTC)
        result = []
        for incident_id in self._access.incidents.dispatch.incidents_of(
                caller.operator.operator_id):
            report = self._access.get_incident(caller, incident_id)
            result.append({"incident": incident_json(report.incident, self._access, now),
                           "dispatch": dispatch_json(self._access, caller, incident_id)})
        return web.json_response({"incidents": result})

    async def officers(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        return web.json_response({"officers": [
            {"officer_id": o.operator_id, "name": o.name, "incidents": incidents}
            for o, incidents in self._access.field_officers(caller)]})

    async def still_jpeg(self, request: web.Request) -> web.Response:
        jpeg = self._access.dispatch_still(self._caller(request), request.match_info["push_id"])
        return web.Response(body=jpeg, content_type="image/jpeg")
