"""The console while the core has lost its broker: every camera ``unknown``, never ``offline``.

The core is real with both pilot agents (40 cameras, all online); Chromium draws the map. The
core then loses its broker, as its sweeper notes it (``StatusIngest.broker_reachability``):
the registry reports every camera ``unknown`` and pushes the change to every console. An
operator must see a city whose status is not known, not a city of broken cameras: the counts
panel says unknown, the map is a hatched neutral grey (not red) with the outage said in words,
and the card of a camera says "status unknown (core lost its broker)". When the broker is back,
all of it returns to online.
"""

from __future__ import annotations

from playwright.async_api import Browser, Page

from cloud_core.server import CoreServer
from tests.console.conftest import artifact, console_page, page_errors, sign_in

TOTAL = 40

#: The colour of the canvas in each cluster (a lone camera's centre, below a cluster's count):
#: ``neutral`` (grey: each channel within 30 of the others), ``red`` or ``green``.
_CLUSTER_COLOUR = """() => {
  const map = window.safetynet.app.view.map;
  const ratio = window.devicePixelRatio || 1;
  const ctx = map.canvas.getContext('2d');
  return window.safetynet.clusters().map((c) => {
    const below = c.count === 1 ? 0 : c.r * 0.8;
    const [r, g, b] = ctx.getImageData(Math.round(c.px * ratio),
                                       Math.round((c.py + below) * ratio), 1, 1).data;
    if (Math.max(r, g, b) - Math.min(r, g, b) <= 30) return 'neutral';
    return r > g ? 'red' : g > r ? 'green' : 'other';
  });
}"""


async def _counts(page: Page) -> dict[str, str]:
    """The counts panel as the operator reads it: each cell's label → its number."""
    cells = await page.eval_on_selector_all(
        ".camera-counts .count-cell",
        "cells => cells.map(c => [c.dataset.state, c.querySelector('b').textContent])")
    return dict(cells)


async def _open_a_camera_card(page: Page) -> str:
    """Zoom in on the map until one camera stands alone, click it; its camera_id."""
    for _ in range(40):
        single = await page.evaluate(
            "() => window.safetynet.clusters().find(c => c.camera && c.px > 20 && c.py > 20"
            " && c.px < window.safetynet.app.view.map.el.clientWidth - 20"
            " && c.py < window.safetynet.app.view.map.el.clientHeight - 20)")
        if single:
            box = await page.locator(".map-frame").bounding_box()
            assert box is not None
            await page.mouse.click(box["x"] + single["px"], box["y"] + single["py"])
            await page.wait_for_selector(".camera-card:not([hidden])")
            return str(single["camera"]["camera_id"])
        target = await page.evaluate(
            "() => { const c = window.safetynet.clusters()[0]; return [c.lat, c.lon]; }")
        point = await page.evaluate("([lat, lon]) => window.safetynet.screenPoint(lat, lon)",
                                    target)
        frames = await page.evaluate("() => window.safetynet.clusterFrames()")
        await page.mouse.move(point["x"], point["y"])
        await page.mouse.wheel(0, -100)
        await page.wait_for_function("(n) => window.safetynet.clusterFrames() > n", arg=frames)
    raise AssertionError("no camera stands alone on the map at any zoom")


async def test_a_core_that_lost_its_broker_shows_every_camera_unknown_then_online_again(
        core: CoreServer, tokens: dict[str, str], pilot_agents: None,
        browser: Browser) -> None:
    page = await console_page(browser, core)
    await sign_in(page, tokens["police-op"])
    await page.wait_for_function(
        f"() => window.safetynet.cameras().counts?.online === {TOTAL}"
        " && window.safetynet.clusters().length > 0", timeout=10_000)
    assert await _counts(page) == {"online": str(TOTAL), "offline": "0", "unknown": "0"}
    camera_id = await _open_a_camera_card(page)
    status = page.locator(".camera-card dd.status-online, .camera-card dd.status-unknown")
    assert await status.inner_text() == "online"
    assert set(await page.evaluate(_CLUSTER_COLOUR)) == {"green"}
    assert await page.locator(".map-notice.unknown").is_hidden()

    # The core loses its broker: every camera unknown, pushed to the console.
    await core.ingest.broker_reachability(False)
    await page.wait_for_function(
        f"() => window.safetynet.cameras().counts?.unknown === {TOTAL}", timeout=15_000)
    assert await _counts(page) == {"online": "0", "offline": "0", "unknown": str(TOTAL)}
    await page.wait_for_function(
        "() => window.safetynet.clusters().length > 0"
        " && window.safetynet.clusters().every(c => c.unknown === c.count && c.offline === 0)")
    assert set(await page.evaluate(_CLUSTER_COLOUR)) == {"neutral"}, "unknown is grey, not red"
    single = await page.evaluate(
        "(id) => window.safetynet.clusters().find(c => c.camera?.camera_id === id).camera",
        camera_id)
    assert single["status"] == "unknown"
    await page.wait_for_selector(".camera-card dd.status-unknown")
    assert await status.inner_text() == "status unknown (core lost its broker)"
    notice = page.locator(".map-notice.unknown")
    assert await notice.is_visible()
    assert "the core lost its broker" in await notice.inner_text()
    districts = await page.locator(".district-counts li").all_inner_texts()
    assert len(districts) == 2 and all("0/20 online · 20 unknown" in d for d in districts)
    await page.screenshot(path=artifact("console-broker-lost.png"))

    # The broker is back: everything returns to online.
    await core.ingest.broker_reachability(True)
    await page.wait_for_function(
        f"() => window.safetynet.cameras().counts?.online === {TOTAL}", timeout=15_000)
    assert await _counts(page) == {"online": str(TOTAL), "offline": "0", "unknown": "0"}
    await page.wait_for_selector(".camera-card dd.status-online")
    assert await status.inner_text() == "online"
    await page.wait_for_function(
        "() => window.safetynet.clusters().length > 0"
        " && window.safetynet.clusters().every(c => c.online === c.count)")
    assert set(await page.evaluate(_CLUSTER_COLOUR)) == {"green"}
    assert await notice.is_hidden()
    assert page_errors(page) == []
