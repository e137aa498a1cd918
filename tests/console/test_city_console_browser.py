"""The console with the whole city's 68,000 cameras in a real browser.

The core is real (registry, camera snapshot, Server-Sent Events); its registry is seeded
directly with ``simulators/city.py``'s cameras, every agent online (the MQTT path is covered by
``test_city_map_browser.py``). Chromium must become interactive (the console's
``safetynet:map-interactive`` mark), show every camera in the clusters of the city view, pan
on a drag without taking the drag for a click, and follow a pushed change. The figures against
their targets are ``bench/city_console.py``'s; here only generous bounds.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import Browser

from cloud_core.config import CoreConfig
from cloud_core.registry import AgentUpdate, CameraUpdate, StatusBatch
from cloud_core.server import CoreServer
from simulators import city
from tests.console.conftest import console_page, page_errors, sign_in

TOTAL = city.CITY_CAMERAS


@pytest.fixture
def core_config(core_config: CoreConfig, tmp_path: Path) -> CoreConfig:
    return replace(core_config, district_outlines_file=city.write_outlines_geojson(
        tmp_path / "city.geojson"))


def _update(camera: city.CityCamera, online: bool) -> CameraUpdate:
    return CameraUpdate(camera.camera_id, camera.district_id, camera.name, camera.lat,
                        camera.lon, "rtsp", "online" if online else "offline",
                        "" if online else "timeout", "", 0, datetime.now(UTC))


@pytest.fixture
def city_cameras(core: CoreServer) -> list[city.CityCamera]:
    assert core.registry is not None and core.feed is not None
    cameras = city.city_cameras(TOTAL)
    for district in city.districts(TOTAL):
        core.feed.notify(core.registry.apply(StatusBatch(
            agents=[AgentUpdate(district.district_id, district.name, district.district_id, True,
                                "test", datetime.now(UTC))],
            cameras=[_update(c, True) for c in cameras if c.district_id == district.district_id])))
    return cameras


async def test_the_console_shows_68000_cameras_pans_on_a_drag_and_follows_a_change(
        core: CoreServer, tokens: dict[str, str], city_cameras: list[city.CityCamera],
        browser: Browser) -> None:
    assert core.registry is not None and core.feed is not None
    page = await console_page(browser, core)
    await sign_in(page, tokens["police-op"])
    await page.wait_for_function(
        "() => performance.getEntriesByName('safetynet:map-interactive').length > 0",
        timeout=20_000)
    await page.wait_for_function(
        f"() => window.safetynet.cameras().counts?.online === {TOTAL}", timeout=20_000)
    # The whole city is in view: its clusters hold every camera, once.
    await page.wait_for_function(
        f"() => window.safetynet.clusters().reduce((n, c) => n + c.count, 0) === {TOTAL}",
        timeout=10_000)
    assert await page.evaluate("() => window.safetynet.clusters().length") < 2_000

    # A drag pans the map (a new frame of clusters) and is not a click on it.
    box = await page.locator(".map-frame").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = await page.evaluate("() => window.safetynet.app.view.map.bounds.x")
    frames = await page.evaluate("() => window.safetynet.clusterFrames()")
    await page.mouse.move(x, y)
    await page.mouse.down()
    for step in range(1, 6):
        await page.mouse.move(x + 40 * step, y)
    await page.mouse.up()
    await page.wait_for_function("(n) => window.safetynet.clusterFrames() > n", arg=frames)
    moved = await page.evaluate("() => window.safetynet.app.view.map.bounds.x") - before
    assert moved < 0, "dragging right shows what is west"
    assert await page.locator(".camera-card").is_hidden()
    assert await page.input_value("input[name=lat]") == ""

    # A pushed change reaches the counts without refetching the city.
    camera = city_cameras[0]
    core.feed.notify(core.registry.apply(StatusBatch(cameras=[_update(camera, False)])))
    await page.wait_for_function(
        "() => window.safetynet.cameras().counts?.offline === 1", timeout=5_000)
    assert page_errors(page) == []
