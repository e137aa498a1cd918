"""A console behind NAT: headless Chromium forced to relay only still gets its first frame.

A real coturn on loopback (REST credentials), the core with ``[turn]`` for it, a pilot agent and
Chromium opened with ``?ice-transport=relay``: the browser's pooled offer carries relay
candidates only (credentials from ``GET /api/ice-servers``, fetched before the pool fills), the
agent relays too (its answer has a relay candidate, minted with the offer), the tile decodes
through coturn, and WHEP's 201 names the session's TURN server in ``rel="ice-server"`` links.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from playwright.async_api import Browser

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from runtime.turn_credentials import TurnSettings
from tests.conftest import GANGNAM, AgentConfigFactory
from tests.console.conftest import console_page, page_errors, sign_in

pytestmark = pytest.mark.media

GANGNAM_STATION = (37.49795, 127.02760)

SELECTED_PAIR = """async () => {
  const tile = window.safetynet.app.view.tiles[0];
  const stats = await tile.pc.getStats();
  let pair = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
  });
  if (!pair) stats.forEach((s) => { if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s; });
  if (!pair) return null;
  return { local: stats.get(pair.localCandidateId).candidateType,
           remote: stats.get(pair.remoteCandidateId).candidateType,
           offer: tile.pc.localDescription.sdp, answer: tile.pc.remoteDescription.sdp,
           policy: tile.pc.getConfiguration().iceTransportPolicy };
}"""


async def test_a_relay_only_console_gets_its_first_frame_through_coturn(
        coturn: TurnSettings, core_config: CoreConfig, agent_config: AgentConfigFactory,
        browser: Browser) -> None:
    async with CoreServer(replace(core_config, turn=coturn)) as core:
        await core.wait_connected()
        assert core.access is not None
        token = core.access.operators.add("police-op", agency="police-112", role="operator",
                                          policy=core.access.policy)[1]
        async with EdgeAgent(agent_config(GANGNAM, cameras=1)):
            await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 1, 10)
            police = core.access.authenticate(token)
            report = await core.access.report_incident(
                police, incident_type="robbery", lat=GANGNAM_STATION[0], lon=GANGNAM_STATION[1])
            incident_id = report.incident.incident.incident_id

            page = await console_page(browser, core, "?ice-transport=relay")
            try:
                await sign_in(page, token)
                await page.wait_for_function("() => window.safetynet.app.ice?.generation > 0")
                async with page.expect_response(lambda r: "/whep/cameras/" in r.url) as whep:
                    await page.evaluate("(id) => window.safetynet.app.navigate(`#/incident/${id}`)",
                                        incident_id)
                response = await whep.value
                assert response.status == 201
                links = await response.header_value("link") or ""
                session_id = (await response.header_value("location") or "").rsplit("/", 1)[-1]
                assert 'rel="ice-server"' in links and f':{session_id}"' in links, links
                assert f"<{coturn.urls[0]}>" in links

                await page.wait_for_function(
                    "() => window.safetynet.tiles().length > 0 && window.safetynet.tiles()[0].state"
                    " === 'live' && window.safetynet.tiles()[0].frames_decoded > 0", timeout=20_000)
                path = await page.evaluate(SELECTED_PAIR)
                assert path is not None
                assert path["policy"] == "relay"
                assert " typ relay" in path["offer"] and " typ host" not in path["offer"]
                assert " typ relay" in path["answer"]  # the agent relays too, with the offer's TURN
                assert path["local"] == "relay", path

                # New credentials (the console refetches at half their lifetime): the offers pooled
                # with the old ones are closed and replaced by offers made with the new ones.
                await page.wait_for_function(
                    "() => window.safetynet.app.pool.ready.length === window.safetynet.app.pool.size",
                    timeout=10_000)
                old = await page.evaluate("""async () => {
                  const app = window.safetynet.app;
                  window.oldOffers = app.pool.ready.map((offer) => offer.pc);
                  const username = app.ice.servers[0].username;
                  await app.ice._fetch();
                  return username;
                }""")
                await page.wait_for_function("""() => {
                  const { pool, ice } = window.safetynet.app;
                  return pool.ready.length === pool.size
                    && pool.ready.every((offer) => offer.generation === ice.generation)
                    && window.oldOffers.every((pc) => pc.signalingState === 'closed');
                }""", timeout=10_000)
                assert await page.evaluate("() => window.safetynet.app.ice.servers[0].username") != old
                assert page_errors(page) == []
            finally:
                # Before the core stops: a page left open keeps its event stream on the console.
                await page.context.close()
