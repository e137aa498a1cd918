"""112 dispatch to an officer's phone in real Chromium: the room assigns the officer, pushes a
still taken at the agent (hash on the audit record), hands off a live camera; the phone page
gets each push as it happens and plays the camera in one tap; unassigning ends it all."""

from __future__ import annotations

import hashlib
import time

import pytest
from playwright.async_api import Browser

from cloud_core import audit as audit_log
from cloud_core.exceptions import AccessDenied
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from tests.conftest import GANGNAM, MAPO, AgentConfigFactory
from tests.console.conftest import artifact, console_url

pytestmark = pytest.mark.media

HONGIK = (MAPO.cameras[0].lat, MAPO.cameras[0].lon)


async def test_an_officer_gets_a_pushed_still_within_1_s_and_plays_a_handed_off_camera(
        core: CoreServer, agent_config: AgentConfigFactory, browser: Browser) -> None:
    access = core.access
    assert access is not None
    policy = access.policy
    room = access.authenticate(access.operators.add("room-kim", agency="police-112",
                                                    role="operator", policy=policy)[1])
    _, officer_token = access.operators.add("officer-park", agency="police-112", role="field",
                                            policy=policy)
    async with EdgeAgent(agent_config(MAPO, cameras=2)) as agent:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 2, 10)
        report = await access.report_incident(room, incident_type="robbery", lat=HONGIK[0],
                                              lon=HONGIK[1], external_ref="112-2026-0900")
        incident_id = report.incident.incident.incident_id
        await access.assign_officer(room, incident_id, "officer-park")

        context = await browser.new_context(viewport={"width": 390, "height": 844})
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(console_url(core).rstrip("/") + "/officer")
        await page.fill("#officer-token", officer_token)
        await page.click("#officer-signin button[type=submit]")
        await page.wait_for_selector(f".officer-incident[data-incident='{incident_id}']")
        await page.wait_for_function("() => window.officer.page.events?.connected === true")

        push = await access.push_still(room, incident_id, "mapo-001")
        pushed_at = time.time() * 1000
        await page.wait_for_selector(".push.still img[data-loaded-at]", timeout=2_000)
        arrived = await page.evaluate("() => window.officer.received()[0].at_ms")
        shown = float(await page.get_attribute(".push.still img", "data-loaded-at") or 0)
        assert arrived - pushed_at < 1000 and shown - pushed_at < 1000, (arrived, shown)
        jpeg = access.dispatch_still(room, push.push_id)
        assert jpeg.startswith(b"\xff\xd8") and hashlib.sha256(jpeg).hexdigest() == push.sha256
        taken = audit_log.search(core.config.audit_database, action="dispatch.still", limit=1)
        assert taken[0].entry.details["sha256"] == push.sha256

        # Outside the grant: refused, nothing pushed. Not handed off: the officer sees nothing.
        with pytest.raises(AccessDenied, match="not within incident"):
            await access.push_still(room, incident_id, GANGNAM.cameras[0].camera_id)
        await access.hand_off_camera(room, incident_id, "mapo-001")
        await page.click("button.watch", timeout=2_000)
        await page.wait_for_function(
            "() => window.officer.tiles().some(t => t.state === 'live' && t.frames_decoded > 0)",
            timeout=15_000)
        await page.screenshot(path=artifact("officer-phone.png"))
        assert agent.sessions

        # Unassigned: the card goes and the officer's session ends at the agent.
        await access.unassign_officer(room, incident_id, "officer-park")
        await page.wait_for_selector(f".officer-incident[data-incident='{incident_id}']",
                                     state="detached", timeout=5_000)
        await core.wait_until(lambda r: not any(
            s["operator_id"] == "officer-park" for s in r.open_sessions()), 5)
        assert errors == []
        await context.close()
