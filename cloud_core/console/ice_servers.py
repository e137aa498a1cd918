"""TURN for browsers behind NAT: credentials before the offer, and WHEP's ``ice-server`` links.

A browser makes its offers ahead of time and WHEP does not trickle, so the TURN servers the core
mints per session (in the answer) come too late for the browser's own relay candidates. The
console therefore asks first:

    GET /api/ice-servers   → {"iceServers": [{urls, username, credential}], "expires_at": ISO}
                             minted for the caller; {"iceServers": [], "expires_at": null}
                             when the core has no [turn]

The user name is ``<unix expiry>:console.<operator id>.<random>`` (TURN REST API, checked by
coturn's ``use-auth-secret`` like the sessions' credentials), so coturn's log says whose relay
it is and no two sign-ins share one. Only roles that watch video get one. The credential is never
logged.

``link_headers`` names a session's servers in WHEP's 201 (draft-ietf-wish-whep, "ICE server
configuration"), so a standard player can use them when it reconnects.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from cloud_core.access import VIEW_ROLES, AccessService
from cloud_core.console.bearer import authenticate
from cloud_core.exceptions import AccessDenied
from cloud_core.policy import Role
from cloud_core.timestamps import iso
from runtime.turn_credentials import TurnSettings, mint
from runtime.webrtc import IceServer

log = structlog.get_logger(__name__)

ICE_SERVER_REL = "ice-server"
RELAY_ROLES = VIEW_ROLES | {Role.FIELD}  # whoever may open a session


def ice_server_json(server: IceServer) -> dict[str, Any]:
    """One entry of an ``RTCConfiguration.iceServers`` list, as a browser takes it."""
    entry: dict[str, Any] = {"urls": list(server.urls)}
    if server.username is not None:
        entry["username"] = server.username
    if server.credential is not None:
        entry["credential"] = server.credential
    return entry


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def link_headers(servers: Iterable[IceServer]) -> list[tuple[str, str]]:
    """``Link: <turn:…>; rel="ice-server"; username=…; credential=…`` per URL."""
    links: list[tuple[str, str]] = []
    for server in servers:
        params = f'rel="{ICE_SERVER_REL}"'
        if server.username is not None and server.credential is not None:
            params += (f"; username={_quoted(server.username)}; "
                       f"credential={_quoted(server.credential)}; credential-type=\"password\"")
        links.extend(("Link", f"<{url}>; {params}") for url in server.urls)
    return links


class IceServersEndpoint:
    """``GET /api/ice-servers``: TURN credentials for the signed-in operator's own offers."""

    def __init__(self, access: AccessService, turn: TurnSettings | None) -> None:
        self._access = access
        self._turn = turn

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/ice-servers", self.ice_servers)]

    async def ice_servers(self, request: web.Request) -> web.Response:
        operator = authenticate(self._access, request).operator
        if self._turn is None:
            return web.json_response({"iceServers": [], "expires_at": None})
        if operator.role not in RELAY_ROLES:
            raise AccessDenied(f"the {operator.role.value} role does not view video: no TURN relay")
        viewer = f"console.{operator.operator_id}.{secrets.token_hex(4)}"
        server = mint(self._turn, viewer)
        assert server.username is not None
        expires = datetime.fromtimestamp(int(server.username.split(":", 1)[0]), UTC)
        log.info("turn credential minted", operator=operator.operator_id, viewer=viewer,
                 expires_at=iso(expires))
        return web.json_response({"iceServers": [ice_server_json(server)],
                                  "expires_at": iso(expires),
                                  "ttl_seconds": self._turn.ttl_seconds})
