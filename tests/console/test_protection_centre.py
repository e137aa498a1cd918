"""The vulnerable-person service end to end: the carrier's wearable feed (the simulator) posting
to the core's feed endpoint, the protection centre's SOS inbox in real Chromium, its live tiles,
and the one-action hand-off to 112 that opens a linked incident."""

from __future__ import annotations

import aiohttp
import pytest
from playwright.async_api import Browser

from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from simulators.wearables import WearableSimConfig, WearableSimulator
from tests.conftest import MAPO, AgentConfigFactory
from tests.console.conftest import artifact, console_page, console_url, page_errors, sign_in

HONGIK = (MAPO.cameras[0].lat, MAPO.cameras[0].lon)


def _token(core: CoreServer, name: str, agency: str, role: str) -> str:
    assert core.access is not None
    return core.access.operators.add(name, agency=agency, role=role,
                                     policy=core.access.policy)[1]


async def test_bad_wearable_events_get_clear_errors_and_change_nothing(core: CoreServer) -> None:
    assert core.access is not None
    feed = _token(core, "carrier-feed", "vulnerable-support", "feed")
    person = _token(core, "lee", "vulnerable-support", "operator")
    url = f"{console_url(core).rstrip('/')}/api/feeds/wearables"
    sos = {"event": "sos", "subject_id": "W-000001", "subject_kind": "child",
           "lat": HONGIK[0], "lon": HONGIK[1], "event_id": "e-1"}
    async with aiohttp.ClientSession() as http:
        def post(body: dict[str, object], token: str = feed):
            return http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})

        async with post(sos) as first, post(sos) as retry:
            assert first.status == 201 and retry.status == 200
            assert (await first.json())["incident_id"] == (await retry.json())["incident_id"]
        stored = [i.incident.incident_id for i in core.access.incidents.list_all()]
        for body, token, status, words in [
            ({**sos, "event": "position", "subject_id": "W-unknown"}, feed, 404, "no open incident"),
            ({**sos, "lat": HONGIK[0] + 1.0, "event_id": "e-2"}, feed, 400, "faster than"),
            ({**sos, "lat": 123.0, "event_id": "e-3"}, feed, 400, "latitude 123"),
            ({**sos, "subject_id": "Kim Min-ji"}, feed, 400, "never a name"),
            ({**sos, "event": "party"}, feed, 400, "event must be one of"),
            (sos, person, 403, "only a feed client"),
        ]:
            async with post(body, token) as response:
                answer = await response.json()
                assert response.status == status, answer
                assert words in answer["message"], answer
        assert [i.incident.incident_id for i in core.access.incidents.list_all()] == stored
        subject = core.access.incidents.get(stored[0])
        assert subject is not None and len(subject.incident.trail) == 1


@pytest.mark.media
async def test_a_wearable_sos_reaches_the_inbox_opens_live_tiles_and_hands_off_to_112(
        core: CoreServer, agent_config: AgentConfigFactory, browser: Browser) -> None:
    assert core.access is not None
    feed = _token(core, "carrier-feed", "vulnerable-support", "feed")
    centre = _token(core, "lee", "vulnerable-support", "operator")
    async with EdgeAgent(agent_config(MAPO, cameras=6)):
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 6, 10)
        page = await console_page(browser, core)
        await sign_in(page, centre)
        await page.wait_for_selector(".protection-inbox")
        await page.wait_for_function("() => window.safetynet.app.events?.connected === true")

        config = WearableSimConfig(core_url=console_url(core), token=feed, subjects=3, seed=7)
        async with WearableSimulator(config) as simulator:
            wearer = simulator.subjects[0]
            wearer.lat, wearer.lon = HONGIK
            answer = await simulator.alert(wearer, "sos")
            incident_id = answer["incident_id"]
            alert = page.locator(f".protection-inbox li[data-incident='{incident_id}']")
            await alert.wait_for(timeout=2_000)
            await alert.click()
            await page.wait_for_function(
                "() => window.safetynet.tiles().length > 0 && "
                "window.safetynet.tiles().every(t => t.state === 'live' && t.frames_decoded > 0)",
                timeout=15_000)
            tiles = await page.evaluate("() => window.safetynet.tiles()")
            assert 1 <= len(tiles) <= 5 and tiles[0]["camera_id"] == "mapo-001"
            await page.screenshot(path=artifact("console-sos-inbox.png"))

            # The wearer walks on; the incident follows (pushed to the view, no new report).
            wearer.lat += 0.0005
            await simulator.position(wearer)
            await page.wait_for_function(
                "(lat) => Math.abs(window.safetynet.app.view.report.incident.lat - lat) < 1e-6",
                arg=wearer.lat, timeout=2_000)

        await page.fill(".handoff-form input[name=reason]", "child not answering the phone")
        await page.click(".handoff-form button[type=submit]")
        await page.wait_for_selector(".incident-moves .links a")
    links = core.access.incident_links(incident_id)
    assert [(link.kind, link.outgoing) for link in links] == [("hand-off", True)]
    linked = core.access.incidents.get(links[0].other_id)
    assert linked is not None and linked.incident.service == "112-emergency-video"
    police = core.access.authenticate(_token(core, "kim", "police-112", "operator"))
    assert core.access.get_incident(police, linked.incident.incident_id)
    assert page_errors(page) == []
