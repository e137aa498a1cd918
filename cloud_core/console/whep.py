"""WHEP (WebRTC-HTTP Egress Protocol, draft-ietf-wish-whep): any standard player can watch.

    POST   /whep/cameras/{camera_id}[?incident=ID|?breakglass=ID]
           Authorization: Bearer <operator token>, Content-Type: application/sdp, body = offer
           → 201 Created, body = SDP answer, Location: /whep/sessions/{session_id}
    DELETE /whep/sessions/{session_id}   → 200, the session ends at the agent
    OPTIONS on either                    → 204 (CORS preflight for players on other origins)

Decided by AccessService.open_session, exactly like gRPC's OpenSession: same policy, same audit,
same signed grant relayed to the agent; media then flows player ↔ agent directly. The agent
does not trickle: send a complete offer (ICE gathering finished), as WHEP allows. PATCH (trickle
ICE) is not supported and gets 405.
"""

from __future__ import annotations

from aiohttp import web

from cloud_core.access import AccessService
from cloud_core.console.bearer import authenticate
from cloud_core.console.http_errors import error_response
from cloud_core.exceptions import InvalidRequest

SDP = "application/sdp"


class WhepEndpoint:
    def __init__(self, access: AccessService) -> None:
        self._access = access

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/whep/cameras/{camera_id}", self.open),
            web.delete("/whep/sessions/{session_id}", self.close),
            web.options("/whep/cameras/{camera_id}", self.preflight),
            web.options("/whep/sessions/{session_id}", self.preflight),
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
        return web.Response(status=201, text=opened.sdp_answer, content_type=SDP,
                            headers={"Location": f"/whep/sessions/{opened.session_id}"})

    async def close(self, request: web.Request) -> web.Response:
        caller = authenticate(self._access, request)
        await self._access.close_session(caller, request.match_info["session_id"])
        return web.Response(status=200)

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "POST, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type",
            "Access-Control-Max-Age": "600",
        })
