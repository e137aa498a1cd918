"""Evidence clips from the console: the "preserve" button on a live tile under an incident.

    POST /api/incidents/{id}/evidence   {camera_id, max_seconds?}   → 201 {clip}
    GET  /api/incidents/{id}/evidence                               → {clips} you may see

Decided, recorded and relayed by ``EvidenceCustody`` exactly as gRPC's ``EvidenceService``
(docs/evidence.md): a role the policy's ``[evidence]`` does not name is refused (403, on the
record), as is a camera outside the incident's grant; the agent's refusals (a clip longer than
it keeps, its disk budget, evidence disabled there) come back with its reason, through the one
table in ``signalling_errors``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from cloud_core.access import AccessService
from cloud_core.console.api import _json_body
from cloud_core.console.bearer import authenticate
from cloud_core.console.http_errors import error_response
from cloud_core.evidence import ClipNotFound, ClipRow, EvidenceCustody, EvidenceRejected
from cloud_core.exceptions import InvalidRequest
from cloud_core.signalling_errors import evidence_refusal_for

MAX_ASKED_SECONDS = 86_400   # the policy's own ceiling is lower; beyond this a number is noise


def clip_json(row: ClipRow) -> dict[str, Any]:
    return {"clip_id": row.clip_id, "camera_id": row.camera_id, "incident_id": row.incident_id,
            "operator_id": row.operator_id, "state": row.state, "started_at": row.started_at,
            "ended_at": row.ended_at, "expires_at": row.expires_at,
            "manifest_sha256": row.manifest_sha256, "segments": len(row.segment_list),
            "end_reason": row.end_reason}


class EvidenceApi:
    def __init__(self, access: AccessService, custody: EvidenceCustody) -> None:
        self._access = access
        self._custody = custody

    def routes(self) -> list[web.RouteDef]:
        path = "/api/incidents/{incident_id}/evidence"
        return [web.post(path, self.preserve), web.get(path, self.clips)]

    async def preserve(self, request: web.Request) -> web.Response:
        caller = authenticate(self._access, request)
        body = await _json_body(request)
        camera_id = body.get("camera_id")
        if not isinstance(camera_id, str) or not camera_id.strip() or len(camera_id) > 128:
            raise InvalidRequest("camera_id is required (a string of at most 128 characters)")
        seconds = body.get("max_seconds", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidRequest(f"max_seconds must be a number of seconds, got {seconds!r}")
        if not 0 <= seconds <= MAX_ASKED_SECONDS:
            raise InvalidRequest(f"max_seconds must be 0 (the policy's maximum) to "
                                 f"{MAX_ASKED_SECONDS} s, got {seconds}")
        try:
            rows = await self._custody.preserve(caller, request.match_info["incident_id"],
                                                [camera_id.strip()], float(seconds))
        except EvidenceRejected as exc:
            refusal = evidence_refusal_for(exc.code)
            return error_response(refusal.http_status, refusal.http_error,
                                  f"the agent refused: {exc.message}")
        return web.json_response({"clip": clip_json(rows[0])}, status=201)

    async def clips(self, request: web.Request) -> web.Response:
        caller = authenticate(self._access, request)
        incident_id = request.match_info["incident_id"]
        self._access.get_incident(caller, incident_id)   # 404 unless the caller may see it
        visible = []
        for row in self._custody.clips(incident_id):
            try:
                visible.append(clip_json(self._custody.visible(caller, row.clip_id)))
            except ClipNotFound:
                continue
        return web.json_response({"clips": visible})
