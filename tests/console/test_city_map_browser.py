"""The console at city scale in a real browser: all 25 districts, a snapshot once, changes pushed.

The core is real (MQTT ingest, registry, the camera snapshot and its Server-Sent Events); the
districts are the status-only simulator (``simulators/district_status.py``), 40 cameras each to
stay fast. Chromium draws the districts and the clustered cameras and must show a camera going
offline within 2 s of the district saying so, without refetching the city.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.async_api import Browser

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from runtime.mqtt_link import BrokerSettings
from simulators import city
from simulators.district_status import SimulatedDistrict, StatusOnlyDistricts
from tests.console.conftest import console_page, page_errors, sign_in

PER_DISTRICT = 40
TOTAL = 25 * PER_DISTRICT


@pytest.fixture
def core_config(core_config: CoreConfig, tmp_path: Path) -> CoreConfig:
    return replace(core_config, district_outlines_file=city.write_outlines_geojson(
        tmp_path / "city.geojson"))


@pytest.fixture
async def city_districts(core: CoreServer,
                         broker_settings: BrokerSettings) -> AsyncIterator[StatusOnlyDistricts]:
    specs = [SimulatedDistrict(d.district_id, d.name, city.district_cameras(d))
             for d in city.districts(TOTAL)]
    async with StatusOnlyDistricts(broker_settings, specs, heartbeat_seconds=30) as districts:
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == TOTAL, 30)
        yield districts


async def test_the_map_draws_the_city_and_shows_a_pushed_change_within_2_s(
        core: CoreServer, tokens: dict[str, str], city_districts: StatusOnlyDistricts,
        browser: Browser) -> None:
    page = await console_page(browser, core)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await sign_in(page, tokens["police-op"])
    await page.wait_for_function(
        f"() => window.safetynet.cameras().counts?.online === {TOTAL}"
        " && window.safetynet.clusters().length > 0", timeout=10_000)
    assert await page.locator(".city-map polygon.district").count() == 25
    assert await page.locator(".district-counts li").count() == 25
    drawn = await page.evaluate("() => window.safetynet.clusters().reduce((n, c) => n + c.count, 0)")
    assert 0 < drawn <= TOTAL

    gangnam = next(d for d in city.districts(TOTAL) if d.district_id == "gangnam")
    camera = city.district_cameras(gangnam)[0]
    started = time.monotonic()
    await city_districts.set_state(camera.camera_id, online=False)
    await page.wait_for_function(
        "() => window.safetynet.cameras().counts?.offline === 1", timeout=2_000)
    pushed_s = time.monotonic() - started
    assert pushed_s < 2.0
    await page.wait_for_function(
        "() => window.safetynet.clusters().some(c => c.offline > 0)", timeout=2_000)
    assert sum(1 for url in requests if url.endswith("/api/cameras")) == 1, "the city is fetched once"
    assert page_errors(page) == []
