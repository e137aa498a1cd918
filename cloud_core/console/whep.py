"""WHEP (WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep): any standard player can watch.

    POST   /whep/cameras/{camera_id}[?incident=ID|?breakglass=ID]
           Authorization: Bearer <operator token>, Content-Type: application/sdp, body = offer
           → 201 Created, body = SDP answer, Location: /whep/sessions/{session_id}
    DELETE /whep/sessions/{session_id}   → 200, the session ends at the agent
    POST   /whep/sessions/{session_id}/first-frame   [{"client": "whep"|"console"|"officer"}]
           the player decoded its first frame: the core records the incident's golden time on
           its own clock (once per session; only the session's own operator may report it)
    OPTIONS on any of them               → 204 (CORS preflight for players on other origins)

The 201 names the first-frame resource in a ``Link`` header (rel ``urn:safetynet:first-frame``),
so a player that follows links needs nothing but the session's Location; with ``[turn]`` it also
names the session's TURN servers, one ``Link: <turn:…>; rel="ice-server"; username=…;
credential=…`` per URL (the draft's ICE server configuration), for the player's reconnect.
The console has its own before it offers (``GET /api/ice-servers``).

Decided by AccessService.open_session, exactly like gRPC's OpenSession: same policy, same audit,
same signed grant relayed to the agent; media then flows player ↔ agent directly. The agent
does not trickle: send a complete offer (ICE gathering finished), as WHEP allows. PATCH (trickle
ICE) is not supported and gets 405.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from cloud_core.access import AccessService
from cloud_core.console.bearer import authenticate
from cloud_core.console.http_errors import error_response
from cloud_core.console.ice_servers import link_headers
from cloud_core.exceptions import InvalidRequest

SDP = "application/sdp"
FIRST_FRAME_REL = "urn:safetynet:first-frame"


class WhepEndpoint:
    def __init__(self, access: AccessService) -> None:
        self._access = access

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whep/cameras/{camera_id}", self.open),
            web.delete("/whep/sessions/{session_id}", self.close),
            web.post("/whep/sessions/{session_id}/first-frame", self.first_frame),
            web.options("/whep/cameras/{camera_id}", self.preflight),
            web.options("/whep/sessions/{session_id}", self.preflight),
            web.options("/whep/sessions/{session_id}/first-frame", self.preflight),
        ]

    async def open(self, request: web.Request) -> web.Response:
        caller = authenticate(self._access, request)
        if request.content_type != SDP:
            got = request.headers.get("Content-Type") or "none"
            return error_response(415, "unsupported_media_type",
                                  f"send the SDP offer as Content-Type: {SDP} (got {got})")
        try:
            offer = (await request.read()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest("the SDP offer is not UTF-8 text") from exc
        opened = await self._access.open_session(
            caller, request.match_info["camera_id"], offer,
            incident_id=request.query.get("incident", ""),
            breakglass_id=request.query.get("breakglass", ""))
        location = f"/whep/sessions/{opened.session_id}"
        headers = [("Location", location),
                   ("Link", f'<{location}/first-frame>; rel="{FIRST_FRAME_REL}"'),
                   *link_headers(opened.ice_servers)]
        return web.Response(status=201, text=opened.sdp_answer, content_type=SDP,
                            headers=CIMultiDict(headers))

    async def close(self, request: web.Request) -> web.Response:
        caller = authenticate(self._access, request)
        await self._access.close_session(caller, request.match_info["session_id"])
        return web.Response(status=200)

    async def first_frame(self, request: web.Request) -> web.Response:
        """The player shows its first frame: golden time for the session's incident."""
        caller = authenticate(self._access, request)
        client = await _client(request)
        row = self._access.first_frame(caller, request.match_info["session_id"], client)
        return web.json_response({"recorded": row is not None,
                                  "report_to_first_frame_ms": row and row.report_to_frame_ms,
                                  "grant_to_first_frame_ms": row and row.grant_to_frame_ms})

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        })


async def _client(request: web.Request) -> str:
    """The reporting client's kind from an optional JSON body; a bare POST is a WHEP player."""
    raw = await request.read()
    if not raw.strip():
        return "whep"
    try:
        body: Any = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body must be empty or JSON like {{\"client\": \"whep\"}}: "
                             f"{exc}") from exc
    client = body.get("client", "whep") if isinstance(body, dict) else None
    if not isinstance(client, str):
        raise InvalidRequest('client must be a string, e.g. {"client": "whep"}')
    return client
