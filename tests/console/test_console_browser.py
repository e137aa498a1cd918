"""The console in a real browser: headless Chromium, the core, Mosquitto and both pilot agents.

What an operator in a 112 or 119 room does: sign in with a token, report an incident by
clicking the map, watch the nearest cameras live (decoded frames, not a black box), see in words
why a camera stays dark, close the incident and see every grant end.
"""

from __future__ import annotations

import time

import pytest
from playwright.async_api import Browser, Page

from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from tests.conftest import MAPO, AgentConfigFactory
from tests.console.conftest import artifact, console_page, page_errors, sign_in

pytestmark = pytest.mark.media

SEOGYO = (37.5522, 126.9212)          # Seogyo-dong, between Hongik Univ. and Sangsu stations
GANGNAM_STATION = (37.49795, 127.02760)


async def _place_incident(page: Page, incident_type: str, at: tuple[float, float],
                          radius: int) -> None:
    """Choose the type, click the map at ``at``, set the radius."""
    await page.select_option("select[name=incident_type]", incident_type)
    point = await page.evaluate("([lat, lon]) => window.safetynet.screenPoint(lat, lon)", list(at))
    await page.mouse.click(point["x"], point["y"])
    placed = (float(await page.input_value("input[name=lat]")),
              float(await page.input_value("input[name=lon]")))
    assert abs(placed[0] - at[0]) < 0.0004 and abs(placed[1] - at[1]) < 0.0005, placed
    await page.fill("input[name=radius_m]", str(radius))


async def _tiles(page: Page) -> list[dict[str, object]]:
    return await page.evaluate("() => window.safetynet.tiles()")


async def test_112_robbery_reported_on_the_map_opens_live_tiles_that_end_when_it_closes(
        core: CoreServer, tokens: dict[str, str], pilot_agents: None,
        browser: Browser) -> None:
    page = await console_page(browser, core)
    await sign_in(page, tokens["police-op"])
    await page.wait_for_function("() => window.safetynet.clusters().length > 0")
    await _place_incident(page, "robbery", SEOGYO, radius=700)
    await page.screenshot(path=artifact("console-map.png"))
    await page.click("button.report-button")

    # The incident view: the cameras inside the radius, nearest first, as tiles.
    await page.wait_for_selector(".incident-view .tile")
    incident = await page.evaluate("() => window.safetynet.app.view.report.incident")
    assert incident["incident_type"] == "robbery" and incident["radius_m"] == 700
    assert core.access is not None
    nearest = [c.camera_id for c in core.access.registry.list_cameras(
        near=(incident["lat"], incident["lon"], 700))]
    shown = await page.eval_on_selector_all(".tile", "tiles => tiles.map(t => t.dataset.camera)")
    assert len(shown) >= 2 and shown == nearest[:9], (shown, nearest)

    # Live: every tile decodes, and the first tile's decoded frames keep growing.
    await page.wait_for_function(
        "() => window.safetynet.tiles().every(t => t.state === 'live' && t.frames_decoded > 0)",
        timeout=15_000)
    decoded = (await _tiles(page))[0]["frames_decoded"]
    await page.wait_for_function("(n) => window.safetynet.tiles()[0].frames_decoded > n + 10",
                                 arg=decoded, timeout=5_000)
    await page.screenshot(path=artifact("console-incident-112.png"))

    # Closing the incident ends every grant it backs; each tile says so within 5 s.
    await page.click("button:has-text('Close incident')")
    await page.fill(".close-form input[name=reason]", "suspect arrested")
    started = time.monotonic()
    await page.click(".close-form button[type=submit]")
    await page.wait_for_function(
        "() => window.safetynet.tiles().every(t => t.message === 'grant ended: incident closed')",
        timeout=5_000)
    assert time.monotonic() - started < 5
    first_message = await page.locator(".tile .tile-message").first.inner_text()
    assert first_message == "grant ended: incident closed"
    await page.screenshot(path=artifact("console-incident-112-closed.png"))

    # A disabled token ends the console session at the next call.
    core.access.operators.disable("police-op")
    await page.wait_for_selector("#signin-notice:has-text('signed out: token disabled')",
                                 timeout=5_000)
    assert page_errors(page) == []


async def test_119_fire_lists_facilities_and_says_why_a_camera_outside_the_radius_is_dark(
        core: CoreServer, tokens: dict[str, str], pilot_agents: None,
        browser: Browser) -> None:
    page = await console_page(browser, core)
    await sign_in(page, tokens["fire-op"])
    await page.wait_for_function("() => window.safetynet.clusters().length > 0")
    await _place_incident(page, "fire", GANGNAM_STATION, radius=300)
    await page.click("button.report-button")
    await page.wait_for_selector(".incident-view .tile[data-camera='gangnam-001']")
    facilities = page.locator(".facilities")
    await facilities.wait_for()
    assert "Gangnam Station public parking" in await facilities.inner_text()

    # Samseong Station is 3.4 km away: the console asks, the core refuses, the tile says why.
    await page.fill(".add-camera input", "gangnam-007")
    await page.click(".add-camera button")
    tile = page.locator(".tile[data-camera='gangnam-007']")
    await page.wait_for_function(
        "() => window.safetynet.tiles().some("
        "t => t.camera_id === 'gangnam-007' && t.state === 'denied')",
        timeout=5_000)
    message = await tile.locator(".tile-message").inner_text()
    assert message.startswith("permission denied: ")
    assert "not within incident" in message and "300 m radius" in message
    await page.wait_for_function(
        "() => window.safetynet.tiles().some("
        "t => t.camera_id === 'gangnam-001' && t.frames_decoded > 0)",
        timeout=15_000)
    await page.screenshot(path=artifact("console-incident-119.png"))
    assert page_errors(page) == []


async def test_auditor_searches_the_log_and_sees_the_chain_verified(
        core: CoreServer, tokens: dict[str, str], browser: Browser) -> None:
    assert core.access is not None
    police = core.access.authenticate(tokens["police-op"])
    report = await core.access.report_incident(
        police, incident_type="robbery", lat=GANGNAM_STATION[0], lon=GANGNAM_STATION[1],
        external_ref="112-2026-0042")
    page = await console_page(browser, core)
    await page.fill("#signin-token", "snt_not-a-token")
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#signin-notice:has-text('token not accepted')")

    await sign_in(page, tokens["auditor"])
    status = page.locator(".chain-status.ok")
    await status.wait_for()
    assert "Audit chain verified" in await status.inner_text()
    await page.fill(".audit-filters input[name=operator]", "police-op")
    await page.click(".audit-filters button[type=submit]")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('.audit-table tbody tr:not(.details)')].length > 0 && "
        "[...document.querySelectorAll('.audit-table tbody tr:not(.details) td:nth-child(5)')]"
        ".every(td => td.textContent === 'police-op')")
    rows = await page.locator(".audit-table tbody tr:not(.details)").all_inner_texts()
    incident_id = report.incident.incident.incident_id
    assert any("incident.report" in row and incident_id in row for row in rows)
    await page.fill(".audit-filters input[name=operator]", "")
    await page.fill(".audit-filters input[name=incident]", report.incident.incident.incident_id)
    await page.click(".audit-filters button[type=submit]")
    await page.wait_for_function(
        "(id) => [...document.querySelectorAll("
        "'.audit-table tbody tr:not(.details) td:nth-child(8)')]"
        ".every(td => td.textContent === id)", arg=report.incident.incident.incident_id)
    await page.screenshot(path=artifact("console-audit.png"))

    # Auditors read the log; they do not watch video, and operators do not read the log.
    await page.click("#signout")
    await sign_in(page, tokens["police-op"])
    assert await page.locator("#nav-audit").is_hidden()
    assert page_errors(page) == []


async def test_a_district_agent_going_away_is_said_in_words_on_its_tiles(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory,
        browser: Browser) -> None:
    page = await console_page(browser, core)
    agent = EdgeAgent(agent_config(MAPO, cameras=4))
    await agent.__aenter__()
    try:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 4, 10)
        await sign_in(page, tokens["police-op"])
        await page.wait_for_function("() => window.safetynet.clusters().length > 0")
        await _place_incident(page, "robbery", SEOGYO, radius=700)
        await page.click("button.report-button")
        await page.wait_for_function(
            "() => window.safetynet.tiles().length >= 2 && "
            "window.safetynet.tiles().every(t => t.state === 'live')", timeout=15_000)
    finally:
        await agent.__aexit__(None, None, None)   # the district's agent stops
    await page.wait_for_function(
        "() => window.safetynet.tiles().every(t => t.message.startsWith('agent unreachable'))",
        timeout=6_000)
    await page.screenshot(path=artifact("console-agent-gone.png"))

    # A new incident there: the console does not even try, and says why.
    await page.evaluate("() => window.safetynet.app.navigate('#/map')")
    await _place_incident(page, "robbery", SEOGYO, radius=700)
    await page.click("button.report-button")
    await page.wait_for_selector(".incident-view .tile")
    messages = await page.locator(".tile .tile-message").all_inner_texts()
    assert messages
    assert all(m == "agent unreachable: the district agent is offline" for m in messages)
    assert page_errors(page) == []
