"""The "preserve" button on a live tile, in real Chromium: under an open incident, for a role the
policy's ``[evidence]`` allows, it starts a clip at the district's agent (a real RTSP camera) and
shows the clip's id, or the refusal's reason in words; a role the policy does not name never sees
it, and the core refuses it that role anyway (on the record)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from cloud_core import audit as audit_log
from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from tests.conftest import GANGNAM, AgentConfigFactory
from tests.console.conftest import artifact, console_page, page_errors, sign_in
from tests.edge_agent.test_rtsp_source import needs_server, serve
from tests.integration.test_evidence import evidence_settings
from tests.integration.test_rtsp_cameras import camera_is, rtsp_agent

pytestmark = pytest.mark.media

CAMERA = GANGNAM.cameras[0].camera_id
STATION = (GANGNAM.cameras[0].lat, GANGNAM.cameras[0].lon)
TILE = f".tile[data-camera='{CAMERA}']"
SHIPPED_POLICY = Path(__file__).resolve().parents[2] / "cloud_core" / "policy.toml"


async def _incident_page(browser: Browser, core: CoreServer, token: str,
                         incident_id: str) -> Page:
    page = await console_page(browser, core)
    await sign_in(page, token)
    await page.evaluate("(id) => window.safetynet.app.navigate(`#/incident/${id}`)", incident_id)
    await page.wait_for_selector(f".incident-view {TILE}")
    return page


async def _preserve(page: Page, seconds: int) -> tuple[str, str]:
    """Choose the clip length, press the tile's Preserve; the words shown and their kind."""
    await page.select_option("select[name=clip_seconds]", str(seconds))
    await page.click(f"{TILE} .tile-action.preserve")
    note = f"{TILE} .tile-note:not([data-kind=busy])"
    await page.wait_for_selector(note, timeout=10_000)
    return await page.inner_text(note), await page.get_attribute(note, "data-kind") or ""


@needs_server
async def test_a_live_tile_preserves_a_clip_and_shows_its_id_or_the_refusal_in_words(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory,
        browser: Browser, tmp_path: Path) -> None:
    access, custody = core.access, core.evidence
    assert access is not None and custody is not None
    async with serve((CAMERA,)) as server:
        config = replace(rtsp_agent(agent_config, server),
                         evidence=evidence_settings(tmp_path, max_clip_seconds=20.0))
        async with EdgeAgent(config):
            await core.wait_until(camera_is(CAMERA, "online"), 10)
            police = access.authenticate(tokens["police-op"])
            report = await access.report_incident(police, incident_type="robbery",
                                                  lat=STATION[0], lon=STATION[1])
            incident_id = report.incident.incident.incident_id
            page = await _incident_page(browser, core, tokens["police-op"], incident_id)
            await page.wait_for_selector(".evidence-card:not([hidden])")
            await page.wait_for_selector(f"{TILE}[data-state=live] .preserve:not([disabled])",
                                         timeout=15_000)

            words, kind = await _preserve(page, 10)
            clip_id = await page.get_attribute(TILE, "data-clip") or ""
            assert kind == "done" and words.startswith(f"clip {clip_id} recording (up to 10 s)")
            clip = custody.clip(clip_id)
            assert clip is not None and (clip.camera_id, clip.incident_id, clip.operator_id) == (
                CAMERA, incident_id, "police-op")
            await page.screenshot(path=artifact("console-evidence-preserved.png"))

            # Longer than this agent keeps: its reason, in words; no clip is added.
            words, kind = await _preserve(page, 300)
            assert kind == "refused", words
            assert words == ("the agent refused: a clip lasts at most 20 s at this agent, "
                             "asked 300 s"), words
            assert [c.clip_id for c in custody.clips(incident_id)] == [clip_id]

            # Closed: the grant ends, and with it the button.
            await access.close_incident(police, incident_id, "suspect arrested")
            await page.wait_for_selector(f"{TILE}[data-state=ended] .preserve[disabled]",
                                         timeout=5_000)
            assert page_errors(page) == []
    preserved = audit_log.search(core.config.audit_database, action="evidence.preserve",
                                 incident_id=incident_id, limit=10)
    # Both requests are on the record, and the refused one's refusal with its reason.
    outcomes = sorted((r.entry.outcome.value, r.entry.details["clip_id"] == clip_id,
                       r.entry.reason or "") for r in preserved)
    assert [o[:2] for o in outcomes] == [("denied", False), ("ok", False),
                                        ("ok", True)], outcomes
    assert "a clip lasts at most 20 s" in outcomes[0][2]


async def test_the_preserve_button_is_there_only_for_roles_the_policy_allows(
        core_config: CoreConfig, agent_config: AgentConfigFactory, browser: Browser,
        tmp_path: Path) -> None:
    policy_file = tmp_path / "policy.toml"
    shipped = SHIPPED_POLICY.read_text()
    assert 'roles = ["operator", "supervisor"]' in shipped
    policy_file.write_text(shipped.replace('roles = ["operator", "supervisor"]',
                                           'roles = ["supervisor"]'))
    async with CoreServer(replace(core_config, policy_file=policy_file)) as core, \
            EdgeAgent(agent_config(GANGNAM, cameras=1)):
        await core.wait_connected()
        access = core.access
        assert access is not None
        token = {name: access.operators.add(name, agency="police-112", role=role,
                                            policy=access.policy)[1]
                 for name, role in (("police-op", "operator"), ("police-sup", "supervisor"))}
        await core.wait_until(camera_is(CAMERA, "online"), 10)
        report = await access.report_incident(access.authenticate(token["police-op"]),
                                              incident_type="robbery", lat=STATION[0],
                                              lon=STATION[1])
        incident_id = report.incident.incident.incident_id

        supervisor = await _incident_page(browser, core, token["police-sup"], incident_id)
        await supervisor.wait_for_selector(f"{TILE} .tile-action.preserve")
        assert await supervisor.is_visible(".evidence-card")

        operator = await _incident_page(browser, core, token["police-op"], incident_id)
        await operator.wait_for_selector(f"{TILE}[data-state=live]", timeout=15_000)
        assert await operator.locator(".tile-action.preserve").count() == 0
        assert await operator.is_hidden(".evidence-card")
        # Asked anyway (not from the console): refused with the reason, and on the record.
        refusal = await operator.evaluate("""(id) => window.safetynet.app.api.post(
            `/api/incidents/${id}/evidence`, { camera_id: 'gangnam-001', max_seconds: 10 })
            .then(() => 'preserved', (err) => `${err.status} ${err.message}`)""", incident_id)
        assert refusal == "403 role operator may not preserve evidence"
        assert core.evidence is not None and core.evidence.clips(incident_id) == []
        denied = audit_log.search(core.config.audit_database, action="evidence.preserve",
                                  limit=5)
        assert [(r.entry.operator_id, r.entry.outcome.value) for r in denied] == [
            ("police-op", "denied")]
        assert page_errors(operator) == [] and page_errors(supervisor) == []
