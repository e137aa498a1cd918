"""The console's JSON API and static assets over real HTTP (no agent, no browser): quick checks
that every call authenticates, errors carry a status and a reason, and nothing is fetched from
elsewhere."""

from __future__ import annotations

import re
import ssl
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from provisioning.certificate_authority import (
    CertificateAuthority,
    certificate_pem,
    new_private_key,
    private_key_pem,
)
from tests.console.conftest import console_url

STATIC = Path(__file__).resolve().parents[2] / "cloud_core" / "console" / "static"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_api_authenticates_every_call_and_explains_refusals(
        core: CoreServer, tokens: dict[str, str]) -> None:
    async with aiohttp.ClientSession(console_url(core)) as http:
        async with http.get("/api/me") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get("/api/me", headers=_auth(tokens["police-op"])) as response:
            me = await response.json()
        assert (me["operator_id"], me["agency"], me["role"], me["views_video"], me["audits"]) == (
            "police-op", "police-112", "operator", True, False)
        assert any("robbery" in s["incident_types"] for s in me["reports"])

        police = _auth(tokens["police-op"])
        async with http.post("/api/incidents", data="{", headers={**police,
                             "Content-Type": "application/json"}) as response:
            assert response.status == 400 and "not JSON" in (await response.json())["message"]
        async with http.post("/api/incidents", json={"incident_type": "robbery", "lat": "x",
                                                     "lon": 127.0}, headers=police) as response:
            assert response.status == 400
            assert "lat must be a number" in (await response.json())["message"]
        async with http.post("/api/incidents", json={"incident_type": "noise-complaint",
                                                     "lat": 37.5, "lon": 127.0},
                             headers=police) as response:
            assert response.status == 403
            assert "does not justify" in (await response.json())["message"]
        async with http.post("/api/incidents", json={"incident_type": "fire", "lat": 37.5,
                                                     "lon": 127.0}, headers=police) as response:
            assert response.status == 403 and "may not report" in (await response.json())["message"]
        async with http.post("/api/incidents", json={"incident_type": "robbery", "lat": 37.49795,
                                                     "lon": 127.0276, "external_ref": "112-1"},
                             headers=police) as response:
            assert response.status == 201
            report = await response.json()
        incident_id = report["incident"]["incident_id"]
        assert response.headers["Location"] == f"/api/incidents/{incident_id}"
        assert report["incident"]["open"] and report["incident"]["radius_m"] == 500
        async with http.get(f"/api/incidents/{incident_id}",
                            headers=_auth(tokens["fire-op"])) as response:
            assert response.status == 404   # not the fire service's incident
        async with http.post(f"/api/incidents/{incident_id}/close", json={"reason": ""},
                             headers=police) as response:
            assert response.status == 400 and "reason" in (await response.json())["message"]
        async with http.get("/api/sessions/ses-nope", headers=police) as response:
            assert response.status == 404

        async with http.get("/api/audit", headers=police) as response:
            assert response.status == 403 and "auditors only" in (await response.json())["message"]
        auditor = _auth(tokens["auditor"])
        async with http.get("/api/audit?since=yesterday", headers=auditor) as response:
            assert response.status == 400
        async with http.get(f"/api/audit?incident={incident_id}", headers=auditor) as response:
            records = (await response.json())["records"]
        assert [r["action"] for r in records] == ["incident.report"]
        async with http.get("/api/audit/verify", headers=auditor) as response:
            verified = await response.json()
        assert verified["ok"] and verified["key_trusted"] and verified["records"] >= 1
        async with http.get("/api/audit/export?format=csv", headers=auditor) as response:
            assert response.status == 200
            assert "attachment" in response.headers["Content-Disposition"]
        async with http.get("/api/audit?action=audit.export", headers=auditor) as response:
            assert len((await response.json())["records"]) == 1   # the export is on the record

        async with http.get("/api/districts", headers=police) as response:
            districts = {d["district_id"]: d for d in (await response.json())["districts"]}
        assert set(districts) == {"gangnam", "mapo"}
        assert all(len(d["outline"][0]) >= 15 for d in districts.values())


async def test_the_console_is_served_whole_from_the_core_with_a_strict_policy(
        core: CoreServer) -> None:
    async with aiohttp.ClientSession(console_url(core)) as http:
        async with http.get("/") as response:
            assert response.status == 200 and response.content_type == "text/html"
            html = await response.text()
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            async with http.get(asset) as response:
                assert response.status == 200, asset
        async with http.get("/static/../config.py") as response:
            assert response.status in (403, 404)
    # Offline: no asset names another host (the SVG namespace is an identifier, not a fetch).
    for path in (p for p in STATIC.rglob("*") if p.is_file()):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name
        assert "@import" not in text and "url(" not in text, path.name


async def test_the_console_speaks_https_with_the_cores_tls_certificate(
        core_config: CoreConfig, tmp_path: Path) -> None:
    authority = CertificateAuthority.create("Seoul")
    key = new_private_key()
    certificate = authority.issue_server(key.public_key(), "core", ["127.0.0.1", "localhost"])
    (tmp_path / "ca.crt").write_bytes(certificate_pem(authority.certificate))
    (tmp_path / "core.crt").write_bytes(certificate_pem(certificate))
    (tmp_path / "core.key").write_bytes(private_key_pem(key))
    config = replace(core_config, tls_cert_file=tmp_path / "core.crt",
                     tls_key_file=tmp_path / "core.key")
    async with CoreServer(config) as core:
        url = console_url(core)
        assert url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}api/me", ssl=trusted) as response:
                assert response.status == 401   # TLS fine; the token is what is missing
            with pytest.raises(aiohttp.ClientError):
                async with http.get(url.replace("https://", "http://")) as response:
                    await response.read()


async def test_dispatch_and_evidence_calls_refuse_bad_input_in_words_and_change_nothing(
        core: CoreServer, tokens: dict[str, str]) -> None:
    assert core.access is not None and core.evidence is not None
    access = core.access
    access.operators.add("officer-park", agency="police-112", role="field", policy=access.policy)
    _, field_token = access.operators.add("officer-kim", agency="police-112", role="field",
                                          policy=access.policy)
    access.operators.add("fire-crew", agency="fire-119", role="field", policy=access.policy)
    police, fire = _auth(tokens["police-op"]), _auth(tokens["fire-op"])
    async with aiohttp.ClientSession(console_url(core)) as http:
        async with http.get("/api/me", headers=police) as response:
            me = await response.json()
        assert (me["dispatches"], me["preserves_evidence"]) == (True, True)
        assert "112-emergency-dispatch" in {s["service"] for s in me["reports"] if s["named"]}
        async with http.get("/api/me", headers=_auth(tokens["auditor"])) as response:
            me = await response.json()
        assert (me["dispatches"], me["preserves_evidence"], me["reports"]) == (False, False, [])

        async with http.get("/api/dispatch/officers", headers=police) as response:
            officers = (await response.json())["officers"]
        assert [o["officer_id"] for o in officers] == ["officer-kim", "officer-park"]
        for who in (_auth(field_token), _auth(tokens["auditor"])):
            async with http.get("/api/dispatch/officers", headers=who) as response:
                assert response.status == 403
                assert "does not dispatch" in (await response.json())["message"]

        async with http.post("/api/incidents", json={
                "incident_type": "robbery", "lat": 37.49795, "lon": 127.02760,
                "service": "112-dispatch"}, headers=police) as response:
            assert response.status == 201, await response.text()
            incident_id = (await response.json())["incident"]["incident_id"]
        evidence = f"/api/incidents/{incident_id}/evidence"
        for body, status, words in (
                ("{", 400, "not JSON"), ([], 400, "must be a JSON object"),
                ({}, 400, "camera_id is required"), ({"camera_id": ""}, 400, "camera_id is required"),
                ({"camera_id": "gangnam-001", "max_seconds": "60"}, 400, "must be a number"),
                ({"camera_id": "gangnam-001", "max_seconds": True}, 400, "must be a number"),
                ({"camera_id": "gangnam-001", "max_seconds": 10 ** 400}, 400, "max_seconds must be"),
                ({"camera_id": "gangnam-001", "max_seconds": -1}, 400, "max_seconds must be"),
                ({"camera_id": "gangnam-001", "max_seconds": 601}, 400, "at most 600 s"),
                ({"camera_id": "mapo-001"}, 403, "outside incident")):
            kwargs = {"data": body, "headers": {**police, "Content-Type": "application/json"}} \
                if isinstance(body, str) else {"json": body, "headers": police}
            async with http.post(evidence, **kwargs) as response:  # type: ignore[arg-type]
                assert response.status == status, (body, await response.text())
                assert words in (await response.json())["message"], body
        async with http.post(evidence, json={"camera_id": "gangnam-001"},
                             headers=fire) as response:
            assert response.status == 403
        async with http.get(evidence, headers=fire) as response:
            assert response.status == 404
        async with http.get(evidence, headers=police) as response:
            assert (await response.json())["clips"] == []
        assert core.evidence.clips(incident_id) == []

        dispatch = f"/api/incidents/{incident_id}/dispatch"
        for path, sent, status, words in (
                ("assign", {"officer_id": "fire-crew"}, 400, "is not admitted"),
                ("assign", {"officer_id": "nobody"}, 400, "not an enabled field officer"),
                ("assign", {"officer_id": 7}, 400, "officer_id is required"),
                ("still", {"camera_id": "mapo-001"}, 403, "not within incident"),
                ("camera", {}, 400, "camera_id is required"),
                ("unassign", {"officer_id": "officer-park"}, 400, "is not assigned")):
            async with http.post(f"{dispatch}/{path}", json=sent, headers=police) as response:
                assert response.status == status, (path, await response.text())
                assert words in (await response.json())["message"], (path, sent)
        async with http.post("/api/incidents/INC-nope/dispatch/assign",
                             json={"officer_id": "officer-park"}, headers=police) as response:
            assert response.status == 404
        assert access.incidents.dispatch.officers(incident_id) == []
        assert access.incidents.dispatch.pushes(incident_id) == []
