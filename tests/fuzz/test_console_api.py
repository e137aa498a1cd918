"""The console's JSON API over real HTTP, fuzzed: random JSON bodies, deep nesting, huge numbers,
long strings and bytes that are not JSON at all into every POST endpoint.

The core never answers 500: every refusal is a JSON error ``{"status", "error", "message"}``
with a 4xx status (503 only for an agent that is away), and a refused request stores nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import NASTY_TEXT, counted, fuzz_settings
from tests.fuzz.rig import CAMERAS, Rig, hosted_rig

FIELDS = ("incident_type", "lat", "lon", "radius_m", "external_ref", "legal_basis", "service",
          "reason")

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**40), 10**40),
    st.floats(allow_nan=False, allow_infinity=False), NASTY_TEXT,
    st.sampled_from(["robbery", "fire", "kidnapping", "112-emergency-video", 37.4979, 127.0276,
                     500, 0, -1, 1e308]),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    """A JSON object over the endpoints' own fields (and others), or raw text that stretches
    the parser: deep nesting, numbers too long for int(), NaN / Infinity, not UTF-8, not JSON."""
    kind = draw(st.sampled_from(("object", "object", "object", "value", "deep", "number",
                                 "special", "bytes")))
    if kind == "object":
        keys = st.sampled_from(FIELDS) | st.text(max_size=10)
        body: Any = draw(st.dictionaries(keys, JSON_VALUES, max_size=8))
        return json.dumps(body).encode()
    if kind == "value":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(100, 3_000))
        opener, closer = draw(st.sampled_from((("[", "]"), ('{"a":', "}"))))
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "number":
        digits = "9" * draw(st.integers(300, 6_000))
        field = draw(st.sampled_from(("lat", "lon", "radius_m")))
        return f'{{"incident_type": "robbery", "lat": 37.5, "lon": 127.0, "{field}": {digits}}}'.encode()
    if kind == "special":
        value = draw(st.sampled_from(("NaN", "Infinity", "-Infinity", "1e999", "-1e999")))
        field = draw(st.sampled_from(("lat", "lon", "radius_m")))
        return f'{{"incident_type": "robbery", "lat": 37.5, "lon": 127.0, "{field}": {value}}}'.encode()
    return draw(st.binary(max_size=200))


@st.composite
def requests(draw: st.DrawFn, incident_id: str) -> tuple[str, str, bytes]:
    """(path, content type, body) for one of the POST endpoints."""
    endpoint = draw(st.sampled_from(("report", "close", "close-unknown", "whep")))
    if endpoint == "whep":
        content_type = draw(st.sampled_from(("application/sdp", "application/sdp",
                                             "application/json", "text/plain")))
        camera = draw(st.sampled_from([*CAMERAS, "gangnam-999", "x" * 300, "%00"]))
        body = draw(st.one_of(st.binary(max_size=300),
                              st.text(max_size=300).map(lambda t: ("v=0\r\nm=video " + t).encode())))
        return f"/whep/cameras/{camera}", content_type, body
    path = {"report": "/api/incidents", "close": f"/api/incidents/{incident_id}/close",
            "close-unknown": f"/api/incidents/{draw(st.text(min_size=1, max_size=20))}/close"}[endpoint]
    return path, "application/json", draw(json_bodies())


def _incidents(rig: Rig) -> list[tuple[object, ...]]:
    return rig.registry.db.execute("SELECT * FROM incidents ORDER BY 1").fetchall()


async def _post(rig: Rig, path: str, content_type: str, body: bytes,
                token: str) -> tuple[int, str, bytes]:
    assert rig.core.console is not None
    async with aiohttp.ClientSession(rig.core.console.url) as http:
        async with http.post(path, data=body, headers={"Content-Type": content_type,
                                                       "Authorization": f"Bearer {token}"}) as response:
            return response.status, response.content_type, await response.read()


def check_console_request(rig: Rig, path: str, content_type: str, body: bytes) -> None:
    counted("console_api")
    token = rig.gangnam_token if path.startswith("/whep/") else rig.police_token
    before = _incidents(rig)
    try:
        target = path.encode("ascii")
    except UnicodeEncodeError:
        target = b""
    status, reply_type, reply = rig.run(_post(rig, path if target else "/api/incidents",
                                              content_type, body, token))
    assert status != 500 and status < 600, (status, reply[:300])
    if status < 300:
        return
    assert reply_type == "application/json", (status, reply_type, reply[:300])
    error = json.loads(reply)
    assert error["status"] == status and isinstance(error["error"], str) and error["message"]
    assert status < 500 or (status == 503 and error["error"] == "agent_unavailable"), error
    if status != 404 or not path.startswith("/whep/"):
        assert _incidents(rig) == before, "a refused request changed the stored incidents"


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    with hosted_rig(console=True) as rig:
        yield rig


@pytest.fixture(scope="module")
def incident_id(rig: Rig) -> str:
    return open_incident(rig)


def open_incident(rig: Rig) -> str:
    """An open robbery incident of the police's, for the close endpoint."""
    status, _, reply = rig.run(_post(rig, "/api/incidents", "application/json", json.dumps(
        {"incident_type": "robbery", "lat": 37.4979, "lon": 127.0276}).encode(), rig.police_token))
    assert status == 201, reply
    return str(json.loads(reply)["incident"]["incident_id"])


@fuzz_settings(200)
@given(st.data())
def test_console_post_endpoints_never_answer_500(rig: Rig, incident_id: str,
                                                 data: st.DataObject) -> None:
    check_console_request(rig, *data.draw(requests(incident_id)))


@pytest.mark.parametrize("body", [
    b"[" * 100_000 + b"]" * 100_000,
    b'{"incident_type": "robbery", "lat": ' + b"9" * 5000 + b', "lon": 127.0}',
    b'{"incident_type": "robbery", "lat": NaN, "lon": 127.0}',
    b'{"incident_type": "robbery", "lat": 37.5, "lon": 127.0, "radius_m": Infinity}',
], ids=["deep-nesting", "5000-digit-number", "nan", "infinity"])
def test_bodies_that_broke_the_parser_are_400(rig: Rig, body: bytes) -> None:
    """Found by the fuzzer: before, each of these answered 500."""
    before = _incidents(rig)
    status, reply_type, reply = rig.run(_post(rig, "/api/incidents", "application/json", body,
                                              rig.police_token))
    assert (status, reply_type) == (400, "application/json"), reply[:300]
    assert json.loads(reply)["error"] == "invalid_request"
    assert _incidents(rig) == before
