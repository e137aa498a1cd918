"""The console's fixtures: the core with its HTTP console on a free loopback port, the pilot
agents in-process, and headless Chromium (the distribution's package) driven by Playwright.

Chromium runs in the tests' loopback-only network namespace (scripts/test) with the flags of
../shared/RECIPES.md, plus ``--use-fake-ui-for-media-stream``: without a media permission
Chromium gathers ICE candidates only on the default route's interface, and a namespace with
nothing but loopback has no default route, so its offers would carry no candidate at all.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from weakref import WeakKeyDictionary

import pytest
from playwright.async_api import Browser, Page, async_playwright

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from runtime.turn_credentials import TurnSettings
from simulators.district_outlines import write_outlines_geojson
from tests.conftest import GANGNAM, MAPO, AgentConfigFactory
from tests.turn_server import running_coturn

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--use-fake-ui-for-media-stream",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def core_config(core_config: CoreConfig, tmp_path: Path) -> CoreConfig:
    """The shared core config, with the console on a free port and the pilot's outlines."""
    return replace(core_config, http_listen="127.0.0.1:0",
                   district_outlines_file=write_outlines_geojson(tmp_path / "districts.geojson"))


def console_url(core: CoreServer) -> str:
    assert core.console is not None
    return core.console.url


@pytest.fixture
async def pilot_agents(core: CoreServer, agent_config: AgentConfigFactory) -> AsyncIterator[None]:
    """Both pilot districts' agents, every camera (320x240 synthetic), all online."""
    async with AsyncExitStack() as stack:
        for district in (GANGNAM, MAPO):
            await stack.enter_async_context(EdgeAgent(agent_config(district, cameras=20)))
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 40, 15)
        yield


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/install does)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                    args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


_PAGE_ERRORS: WeakKeyDictionary[Page, list[str]] = WeakKeyDictionary()


async def console_page(browser: Browser, core: CoreServer, query: str = "") -> Page:
    """A fresh page on the console's sign-in screen (1600x900, a control-room screen);
    ``query`` is added to its URL (e.g. ``?ice-transport=relay``).

    Uncaught script errors are kept: ``page_errors(page)`` must be empty at the end of a test.
    """
    context = await browser.new_context(viewport={"width": 1600, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    _PAGE_ERRORS[page] = errors
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(console_url(core) + query)
    await page.wait_for_selector("#signin-token")
    return page


async def sign_in(page: Page, token: str) -> None:
    await page.fill("#signin-token", token)
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#app:not([hidden]) #view > section")


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


def page_errors(page: Page) -> list[str]:
    """Uncaught errors the console's scripts threw on ``page``."""
    return _PAGE_ERRORS.get(page, [])


TURN_SECRET = "a-console-test-secret-of-enough-length"


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[TurnSettings]:
    """A real coturn on loopback (REST auth with TURN_SECRET), relaying to loopback peers; the
    core's ``[turn]`` for it."""
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (apt-get install coturn)")
    turn_dir = tmp_path / "coturn"
    turn_dir.mkdir()
    async with running_coturn(turn_dir, TURN_SECRET) as port:
        yield TurnSettings(urls=(f"turn:127.0.0.1:{port}?transport=udp",), secret=TURN_SECRET,
                           ttl_seconds=600)
