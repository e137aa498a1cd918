"""112 dispatch from the room's console, in real Chromium: the room reports a 112 emergency
dispatch incident on the report form, dispatches a field officer, pushes a still from a live tile
(a real RTSP camera behind a real agent) and hands the camera off; the officer's phone page (a
second browser) shows each push as it arrives and plays the camera, reporting its first frame to
golden time; recalling the officer takes it all away."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest
from playwright.async_api import Browser, Page

from cloud_core import audit as audit_log
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from tests.conftest import GANGNAM, AgentConfigFactory
from tests.console.conftest import artifact, console_page, console_url, page_errors, sign_in
from tests.edge_agent.test_rtsp_source import needs_server, serve
from tests.integration.test_rtsp_cameras import camera_is, rtsp_agent

pytestmark = pytest.mark.media

CAMERA = GANGNAM.cameras[0].camera_id
STATION = (GANGNAM.cameras[0].lat, GANGNAM.cameras[0].lon)
TILE = f".tile[data-camera='{CAMERA}']"


async def _report_dispatch_incident(room: Page) -> dict[str, object]:
    """On the report form: 112 emergency dispatch, a robbery at the station."""
    groups = await room.eval_on_selector_all(
        "select[name=incident_type] optgroup", "groups => groups.map(g => g.label)")
    assert "112 emergency dispatch" in groups and "112 emergency video" in groups
    await room.evaluate("""() => {
        const select = document.querySelector('select[name=incident_type]');
        select.querySelector('optgroup[data-service="112-emergency-dispatch"] option[value=robbery]')
            .selected = true;
        select.dispatchEvent(new Event('change'));
    }""")
    await room.fill("input[name=lat]", str(STATION[0]))
    await room.fill("input[name=lon]", str(STATION[1]))
    await room.click("button.report-button")
    await room.wait_for_selector(".incident-view .tile")
    incident: dict[str, object] = await room.evaluate(
        "() => window.safetynet.app.view.report.incident")
    return incident


async def _phone(browser: Browser, core: CoreServer, token: str) -> tuple[Page, list[str]]:
    """The officer's phone page, signed in, with the script errors it throws."""
    context = await browser.new_context(viewport={"width": 390, "height": 844})
    phone = await context.new_page()
    errors: list[str] = []
    phone.on("pageerror", lambda error: errors.append(str(error)))
    await phone.goto(console_url(core).rstrip("/") + "/officer")
    await phone.fill("#officer-token", token)
    await phone.click("#officer-signin button[type=submit]")
    await phone.wait_for_function("() => window.officer.page.events?.connected === true")
    await phone.wait_for_selector("#officer-incidents .empty")
    return phone, errors


@needs_server
async def test_the_112_room_dispatches_an_officer_and_pushes_a_still_from_a_tile_to_their_phone(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory,
        browser: Browser) -> None:
    access = core.access
    assert access is not None
    _, officer_token = access.operators.add("officer-park", agency="police-112", role="field",
                                            policy=access.policy)
    access.operators.add("officer-lee", agency="police-112", role="field", policy=access.policy)
    access.operators.add("fire-crew", agency="fire-119", role="field", policy=access.policy)
    async with serve((CAMERA,)) as server, EdgeAgent(rtsp_agent(agent_config, server)):
        await core.wait_until(camera_is(CAMERA, "online"), 10)
        room = await console_page(browser, core)
        await sign_in(room, tokens["police-op"])
        incident = await _report_dispatch_incident(room)
        assert incident["service"] == "112-emergency-dispatch"
        incident_id = str(incident["incident_id"])
        phone, phone_errors = await _phone(browser, core, officer_token)

        # The room's dispatch card offers its own agency's field officers only.
        await room.wait_for_selector(".dispatch-card:not([hidden]) .dispatched li.empty")
        offered = await room.eval_on_selector_all(".dispatch-form option",
                                                  "options => options.map(o => o.value)")
        assert offered == ["officer-lee", "officer-park"]
        await room.select_option(".dispatch-form select", "officer-park")
        await room.click(".dispatch-form button[type=submit]")
        await room.wait_for_selector(".dispatched li[data-officer='officer-park']")
        card = f".officer-incident[data-incident='{incident_id}']"
        await phone.wait_for_selector(card, timeout=2_000)

        # A still from the live tile: taken at the agent, on the officer's phone within 1 s.
        await room.wait_for_selector(f"{TILE}[data-state=live] .push-still:not([disabled])",
                                     timeout=15_000)
        await room.click(f"{TILE} .push-still")
        await room.wait_for_selector(f"{TILE} .tile-note[data-kind=done]", timeout=10_000)
        note = await room.inner_text(f"{TILE} .tile-note")
        assert note.startswith("still sent to officer-park"), note
        [push] = access.incidents.dispatch.pushes(incident_id)
        await phone.wait_for_selector(f"{card} .push.still img[data-loaded-at]", timeout=2_000)
        shown_ms = float(await phone.get_attribute(f"{card} .push.still img", "data-loaded-at")
                         or 0)
        size = await phone.eval_on_selector(f"{card} .push.still img",
                                            "img => [img.naturalWidth, img.naturalHeight]")
        assert size == [320, 240]   # decoded on the phone, not only fetched
        assert shown_ms - push.at.timestamp() * 1000 < 1000, (shown_ms, push.at)
        jpeg = access.dispatch_still(access.authenticate(tokens["police-op"]), push.push_id)
        assert jpeg.startswith(b"\xff\xd8") and hashlib.sha256(jpeg).hexdigest() == push.sha256
        assert push.sha256[:12] in note
        taken = audit_log.search(core.config.audit_database, action="dispatch.still", limit=1)
        assert taken[0].entry.details["sha256"] == push.sha256
        await room.wait_for_selector(f".push-log li.still[data-push='{push.push_id}']")

        # Hand the camera off: the officer plays it in one tap; both first frames are timed.
        await room.click(f"{TILE} .hand-off")
        await room.wait_for_selector(f"{TILE} .tile-note:has-text('handed off live')")
        await phone.click(f"{card} button.watch", timeout=2_000)
        await phone.wait_for_function(
            "() => window.officer.tiles().some(t => t.state === 'live' && t.frames_decoded > 0)",
            timeout=15_000)
        await core.wait_until(lambda _: {r.client for r in access.golden_time.rows()}
                              == {"console", "officer"}, 5)
        officer_row = next(r for r in access.golden_time.rows() if r.client == "officer")
        assert officer_row.incident_id == incident_id and officer_row.camera_id == CAMERA
        assert officer_row.first_frame_at <= datetime.now(UTC)
        await room.screenshot(path=artifact("console-dispatch-room.png"))
        await phone.screenshot(path=artifact("console-dispatch-phone.png"))

        # Recalled from the room: the phone's card goes, and so does the officer's session.
        await room.click(".dispatched li[data-officer='officer-park'] .recall")
        await room.wait_for_selector(".dispatched li.empty")
        await phone.wait_for_selector(card, state="detached", timeout=5_000)
        await core.wait_until(lambda r: not any(
            s["operator_id"] == "officer-park" for s in r.open_sessions()), 5)
        assert page_errors(room) == [] and phone_errors == []
