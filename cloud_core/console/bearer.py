"""Who is calling: ``Authorization: Bearer <operator token>``, checked by AccessService."""

from __future__ import annotations

from aiohttp import web

from cloud_core.access import AccessService, Caller


def bearer_token(request: web.Request) -> str:
    """The request's bearer token, or "" when there is none."""
    value = request.headers.get("Authorization", "")
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return ""


def authenticate(access: AccessService, request: web.Request) -> Caller:
    """The operator behind ``request``; raises Unauthenticated (HTTP 401)."""
    return access.authenticate(bearer_token(request), request.remote or "")
