"""``GET /api/ice-servers`` over real HTTP: TURN credentials for the console's own offers.

Refused without a token, empty without ``[turn]``, and with it a credential that coturn's REST
scheme accepts (HMAC-SHA1 of the user name with the shared secret; a real coturn allocates with
it), never written to a log. WHEP's ``ice-server`` links are checked here in their form and in
``test_turn_console_browser.py`` on a real session.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime

import aiohttp
import pytest
from structlog.testing import capture_logs

from cloud_core.config import CoreConfig
from cloud_core.console.ice_servers import link_headers
from cloud_core.server import CoreServer
from runtime.turn_credentials import TurnSettings
from runtime.webrtc import IceServer
from tests.conftest import TEST_OPERATORS
from tests.console.conftest import TURN_SECRET, console_url
from tests.turn_server import turn_allocate

TURN = TurnSettings(urls=("turn:turn.test:3478?transport=udp", "turns:turn.test:5349"),
                    secret=TURN_SECRET, ttl_seconds=900)


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _tokens(core: CoreServer) -> dict[str, str]:
    assert core.access is not None
    return {name: core.access.operators.add(name, agency=agency, role=role,
                                            policy=core.access.policy)[1]
            for name, (agency, role) in TEST_OPERATORS.items()}


@pytest.fixture
async def turn_core(core_config: CoreConfig) -> AsyncIterator[CoreServer]:
    async with CoreServer(replace(core_config, turn=TURN)) as server:
        yield server


async def test_without_a_token_401_and_without_turn_an_empty_list(
        core: CoreServer, tokens: dict[str, str]) -> None:
    async with aiohttp.ClientSession(console_url(core)) as http:
        async with http.get("/api/ice-servers") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get("/api/ice-servers", headers=_auth("sn_nobody.wrong")) as response:
            assert response.status == 401
        async with http.get("/api/ice-servers", headers=_auth(tokens["police-op"])) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            assert await response.json() == {"iceServers": [], "expires_at": None}


async def test_minted_credential_is_the_rest_schemes_hmac_and_never_logged(
        turn_core: CoreServer) -> None:
    tokens = _tokens(turn_core)
    with capture_logs() as logs:
        async with aiohttp.ClientSession(console_url(turn_core)) as http:
            async with http.get("/api/ice-servers") as response:
                assert response.status == 401
            async with http.get("/api/ice-servers", headers=_auth(tokens["police-op"])) as response:
                assert response.status == 200
                answer = await response.json()
            async with http.get("/api/ice-servers", headers=_auth(tokens["police-op"])) as response:
                again = await response.json()
            async with http.get("/api/ice-servers", headers=_auth(tokens["auditor"])) as response:
                assert response.status == 403  # no video, no relay
    (server,) = answer["iceServers"]
    assert server["urls"] == list(TURN.urls)
    expiry, _, viewer = server["username"].partition(":")
    assert viewer.startswith("console.police-op.")
    assert abs(int(expiry) - (time.time() + TURN.ttl_seconds)) < 30
    assert datetime.fromisoformat(answer["expires_at"]).timestamp() == int(expiry)
    expected = hmac.new(TURN_SECRET.encode(), server["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(server["credential"]) == expected
    # Each fetch its own viewer: two consoles of one operator do not share an allocation's name.
    assert again["iceServers"][0]["username"] != server["username"]

    minted = [e for e in logs if e["event"] == "turn credential minted"]
    assert len(minted) == 2 and minted[0]["operator"] == "police-op"
    for secret in (server["credential"], again["iceServers"][0]["credential"], TURN_SECRET):
        assert not any(secret in repr(e) for e in logs), secret


async def test_coturn_accepts_the_consoles_credential(
        coturn: TurnSettings, core_config: CoreConfig) -> None:
    async with CoreServer(replace(core_config, turn=coturn)) as core:
        token = _tokens(core)["gangnam-op"]
        async with aiohttp.ClientSession(console_url(core)) as http, http.get(
                "/api/ice-servers", headers=_auth(token)) as response:
            (server,) = (await response.json())["iceServers"]
    port = int(coturn.urls[0].split(":")[2].split("?")[0])
    host, _ = await turn_allocate(port, server["username"], server["credential"])
    assert host == "127.0.0.1"


def test_whep_links_name_each_turn_url_with_its_credential() -> None:
    servers = (IceServer(urls=("turn:a:3478?transport=udp", "turns:a:5349"),
                         username="1700000000:ses-1", credential='pa"ss+/='),
               IceServer(urls=("stun:s:3478",)))
    assert link_headers(servers) == [
        ("Link", '<turn:a:3478?transport=udp>; rel="ice-server"; username="1700000000:ses-1"; '
                 'credential="pa\\"ss+/="; credential-type="password"'),
        ("Link", '<turns:a:5349>; rel="ice-server"; username="1700000000:ses-1"; '
                 'credential="pa\\"ss+/="; credential-type="password"'),
        ("Link", '<stun:s:3478>; rel="ice-server"'),
    ]
    assert link_headers(()) == []
