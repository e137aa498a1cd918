"""Golden time, measured in the browser: "Report incident" pressed → first frame in the first tile.

Starts a Mosquitto broker, the core with its console, and both pilot agents (each its own process,
as in the demo), then drives headless Chromium (the distribution's ``/usr/bin/chromium`` through
Playwright) as a 112 operator: choose "robbery", place it at a camera, press "Report incident".
The console stamps ``performance.now()`` when the button is pressed and when the first tile
(the nearest camera) presents its first decoded frame (``requestVideoFrameCallback``); the
difference is one sample. Between runs the incident is closed. Prints min / p50 / p95 / max (ms)
as JSON.

    python bench/golden_time.py [--runs 10] [--mode cold|warm] [--source sim:?…] [--no-offer-pool]

``cold``: every run reports at a different camera and waits until the agents have released the
previous cameras, so the nearest camera is not being pulled by anyone (the usual case for an
incident). ``warm``: every run reports at the same place right after the previous one, so the
camera is still running and its first frame comes from the agent's GOP cache.
``--no-offer-pool`` empties the console's pool of ready offers, so every tile gathers its ICE
candidates after the press (what the pool saves: Chromium takes ~150 ms to finish gathering).

Run it in a loopback-only network namespace, as the tests do (root):
``unshare --net sh -c 'ip link set lo up && exec .venv/bin/python bench/golden_time.py'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from media_rig import summary
from playwright.async_api import async_playwright

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerSettings
from safetynet.broker import MosquittoBroker
from safetynet.demo import AgentProcess
from simulators.agent_configs import write_pilot_configs
from simulators.district_outlines import write_outlines_geojson
from simulators.pilot_districts import PILOT_DISTRICTS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns",
    # Without a media permission Chromium gathers ICE candidates only on the default route's
    # interface; a loopback-only namespace has none (see tests/console/conftest.py).
    "--use-fake-ui-for-media-stream",
]
IDLE_CLOSE_SECONDS = 1.0



def report_points(mode: str, runs: int) -> list[tuple[float, float]]:
    """Where each run's robbery is: 30 m north of a camera, alternating districts."""
    cameras = [c for pair in zip(*(d.cameras for d in PILOT_DISTRICTS), strict=True) for c in pair]
    if mode == "warm":
        cameras = cameras[:1]
    return [(cameras[i % len(cameras)].lat + 0.00027, cameras[i % len(cameras)].lon)
            for i in range(runs)]


async def measure(page: Any, at: tuple[float, float]) -> dict[str, float]:
    await page.select_option("select[name=incident_type]", "robbery")
    await page.fill("input[name=lat]", f"{at[0]:.6f}")
    await page.fill("input[name=lon]", f"{at[1]:.6f}")
    await page.click("button.report-button")
    await page.wait_for_function("() => window.safetynet.metrics.firstTileFrameAt !== null",
                                 timeout=15_000)
    metrics = await page.evaluate("() => ({...window.safetynet.metrics})")
    return {"golden_ms": metrics["firstTileFrameAt"] - metrics["reportPressedAt"],
            "report_ms": metrics["reportAnsweredAt"] - metrics["reportPressedAt"]}


async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="safetynet-golden-") as tmp:
        state = Path(tmp)
        async with MosquittoBroker() as broker:
            config = CoreConfig(
                database=state / "core.sqlite3", listen="127.0.0.1:0", http_listen="127.0.0.1:0",
                broker=BrokerSettings(host=broker.host, port=broker.port),
                district_outlines_file=write_outlines_geojson(state / "districts.geojson"))
            async with CoreServer(config) as core:
                assert core.access is not None and core.console is not None
                _, token = core.access.operators.add(
                    "bench-police", agency="police-112", role="operator", policy=core.access.policy)
                caller = core.access.authenticate(token)
                configs = write_pilot_configs(state / "agents", broker_host=broker.host,
                                              broker_port=broker.port, source=args.source,
                                              grant_public_key=config.grant_public_key_path,
                                              idle_close_seconds=IDLE_CLOSE_SECONDS)
                agents = [AgentProcess(p.stem, p, "warning") for p in configs]
                for agent in agents:
                    await agent.start()
                samples: list[dict[str, float]] = []
                try:
                    expected = sum(len(d.cameras) for d in PILOT_DISTRICTS)
                    await core.wait_until(
                        lambda r: len(r.list_cameras(status="online")) >= expected, 30)
                    async with async_playwright() as playwright:
                        browser = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                                   args=CHROMIUM_ARGS)
                        page = await browser.new_page(viewport={"width": 1600, "height": 900})
                        await page.goto(core.console.url)
                        await page.fill("#signin-token", token)
                        await page.click("#signin-form button[type=submit]")
                        await page.wait_for_selector(".report-button")
                        await asyncio.sleep(1.0)  # let the console's offer pool fill, as it would
                        if args.no_offer_pool:
                            await page.evaluate("""() => { const pool = window.safetynet.app.pool;
                                pool.size = 0; pool.ready.forEach((o) => o.pc.close());
                                pool.ready = []; }""")
                        for at in report_points(args.mode, args.runs):
                            samples.append(await measure(page, at))
                            incident_id = await page.evaluate(
                                "() => window.safetynet.metrics.incidentId")
                            await page.evaluate("() => window.safetynet.app.navigate('#/map')")
                            await core.access.close_incident(caller, incident_id, "bench run done")
                            await page.wait_for_selector(".report-button")
                            if args.mode == "cold":
                                # The agents release the camera IDLE_CLOSE_SECONDS after its
                                # last viewer; the next run is at another camera anyway.
                                await asyncio.sleep(IDLE_CLOSE_SECONDS + 1.0)
                        await browser.close()
                finally:
                    for agent in agents:
                        await agent.stop()
    return {
        "benchmark": "golden_time",
        "measured": "in the browser: 'Report incident' pressed -> first frame in the first tile",
        "mode": args.mode,
        "offer_pool": not args.no_offer_pool,
        "runs": len(samples),
        "source": args.source,
        "golden_time_ms": summary([s["golden_ms"] for s in samples]),
        "report_incident_call_ms": summary([s["report_ms"] for s in samples]),
        "samples_ms": [round(s["golden_ms"], 1) for s in samples],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--mode", choices=["cold", "warm"], default="cold")
    parser.add_argument("--source", default="sim:?size=640x360&fps=15&gop=1",
                        help="camera source for every simulated camera (default: the demo's)")
    parser.add_argument("--no-offer-pool", action="store_true",
                        help="make every offer after the press (no offers ready in advance)")
    args = parser.parse_args()
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
