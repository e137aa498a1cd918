"""Our errors become HTTP responses here, and only here (the servicer does it for gRPC).

Every error body is JSON, ``{"status": 403, "error": "access_denied", "message": "…"}``: the
message is for people (the console shows it on the tile), ``error`` lets a client tell the cases
apart (a camera that is offline from an agent that is unreachable).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from cloud_core.console.bearer import bearer_token
from cloud_core.exceptions import (
    AccessDenied,
    AgentUnavailable,
    CameraNotFound,
    IncidentNotFound,
    InvalidRequest,
    RegistryError,
    SessionNotFound,
    SessionRejected,
    Unauthenticated,
)
from cloud_core.signalling_errors import refusal_for

log = structlog.get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_JSON_PREFIXES = ("/api/", "/whep/")


def error_response(status: int, error: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"status": status, "error": error, "message": message},
                             status=status, headers=headers)


def _translate(request: web.Request, exc: Exception) -> web.Response:
    if isinstance(exc, Unauthenticated):
        challenge = 'Bearer realm="safetynet"'
        if bearer_token(request):
            challenge += ', error="invalid_token"'
        return error_response(401, "unauthenticated", exc.reason, {"WWW-Authenticate": challenge})
    if isinstance(exc, AccessDenied):
        return error_response(403, "access_denied", exc.reason)
    if isinstance(exc, InvalidRequest):
        return error_response(400, "invalid_request", exc.problem)
    if isinstance(exc, CameraNotFound | IncidentNotFound | SessionNotFound):
        return error_response(404, "not_found", str(exc))
    if isinstance(exc, AgentUnavailable):
        return error_response(503, "agent_unavailable", str(exc))
    if isinstance(exc, SessionRejected):
        refusal = refusal_for(exc.code)
        return error_response(refusal.http_status, refusal.http_error,
                              f"the agent refused the session: {exc.message}")
    log.error("core error", error=str(exc), path=request.path)
    return error_response(500, "core_error", "the core failed to handle the request")


@web.middleware
async def translate_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Our errors (and aiohttp's own 4xx under /api and /whep) as JSON error responses."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not request.path.startswith(_JSON_PREFIXES):
            raise
        response = error_response(exc.status, exc.reason.lower().replace(" ", "_"),
                                  exc.text or exc.reason)
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except (Unauthenticated, AccessDenied, InvalidRequest, CameraNotFound, IncidentNotFound,
            SessionNotFound, AgentUnavailable, SessionRejected, RegistryError) as exc:
        response = _translate(request, exc)
        log.info("http request refused", path=request.path, method=request.method,
                 status=response.status, why=str(exc))
        return response
