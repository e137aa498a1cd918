"""Cloud relay fan-out CPU per viewer, against the district agent's own (docs/cloud-relay.md).

One simulated RTSP camera (720p, 15 fps, ~2.5 Mb/s by default), the real edge agent in a process
of its own (bench/media_rig.py) and a real relay process (``safetynet relay run``) registered with
the core by its key. N aiortc viewers in this process (counting frames, not decoding them) open
sessions through the core's gRPC OpenSession under a robbery incident, each as its own police
operator:

- ``direct``: the incident does not ask for a relay; every viewer is served by the agent;
- ``relay``: the incident asks for one; the relay pulls the camera once and serves every viewer.

The CPU of the agent and of the relay are read from /proc over ``--windows`` windows of
``--seconds`` each once every viewer has video; each figure is min / p50 / p95 / max over the
windows, in % of one core, total and per viewer. The 1-minute load average is printed with each
run: the machine is shared, so read the figures with it.

    python bench/relay_fanout.py [--viewers 10,30] [--seconds 2] [--windows 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from media_rig import MediaRig, count_frames_without_decoding, cpu_seconds, summary

from runtime.logs import configure_logging
from runtime.signing_keys import load_or_create_signing_key, write_public_key
from simulators.pilot_districts import GANGNAM
from viewer.client import CameraViewer

CAMERA = GANGNAM.cameras[0]
RELAY = "relay-bench"


async def cpu_windows(pids: dict[str, int], seconds: float, windows: int) -> dict[str, list[float]]:
    """Percent of one core each process used, per window."""
    samples: dict[str, list[float]] = {name: [] for name in pids}
    loop = asyncio.get_running_loop()
    for _ in range(windows):
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        start = loop.time()
        await asyncio.sleep(seconds)
        elapsed = loop.time() - start
        for name, pid in pids.items():
            samples[name].append(100.0 * (cpu_seconds(pid) - before[name]) / elapsed)
    return samples


async def start_relay(rig: MediaRig, key: Path) -> asyncio.subprocess.Process:
    assert rig.broker is not None and rig.core is not None
    config = rig.state_dir / "relay.toml"
    config.write_text(
        f'[relay]\nid = "{RELAY}"\nidentity_key = "{key}"\n\n'
        f'[grants]\npublic_key = "{rig.core.config.grant_public_key_path}"\n\n'
        f'[broker]\nhost = "{rig.broker.host}"\nport = {rig.broker.port}\n\n'
        '[webrtc]\nadvertise = ["127.0.0.1"]\n')
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", "relay", "run", "--config", str(config),
        "--log-level", "warning", stdin=asyncio.subprocess.DEVNULL, start_new_session=True)


async def measure(rig: MediaRig, relay: asyncio.subprocess.Process, viewers: int, via_relay: bool,
                  args: argparse.Namespace) -> dict[str, Any]:
    core = rig.core
    assert core is not None and core.access is not None
    caller = core.access.authenticate(core.access.operators.add(
        f"bench-112-{viewers}-{int(via_relay)}", agency="police-112", role="operator",
        policy=core.access.policy)[1])
    report = await core.access.report_incident(caller, incident_type="robbery", lat=CAMERA.lat,
                                               lon=CAMERA.lon)
    incident = report.incident.incident.incident_id
    if via_relay:
        core.access.ask_relay(caller, incident)
    tokens = [core.access.operators.add(f"bench-police-{viewers}-{int(via_relay)}-{n}", agency="police-112",
                                        role="operator", policy=core.access.policy)[1]
              for n in range(viewers)]
    async with contextlib.AsyncExitStack() as stack:
        watching = [await stack.enter_async_context(CameraViewer(
            core.address, CAMERA.camera_id, webrtc=rig.webrtc, token=token, incident_id=incident))
            for token in tokens]
        for viewer in watching:
            await viewer.wait_frames(1, timeout=30)
        await asyncio.sleep(args.warmup)
        before = [v.report.frames for v in watching]
        window = args.seconds * args.windows
        cpu = await cpu_windows({"agent": rig.agent_pid, "relay": relay.pid}, args.seconds,
                                args.windows)
        fps = sorted((v.report.frames - b) / window for v, b in zip(watching, before, strict=True))
        load = os.getloadavg()[0]
    await core.access.close_incident(caller, incident, "bench done")
    serving = "relay" if via_relay else "agent"
    return {
        "mode": "relay" if via_relay else "direct", "viewers": viewers,
        "agent_cpu_percent": summary(cpu["agent"], digits=2),
        "relay_cpu_percent": summary(cpu["relay"], digits=2),
        f"{serving}_cpu_per_viewer_percent": round(statistics.median(cpu[serving]) / viewers, 3),
        "viewer_fps": {"min": round(fps[0], 1), "p50": round(statistics.median(fps), 1),
                       "max": round(fps[-1], 1)},
        "load_average_1m": round(load, 2),
    }


async def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    count_frames_without_decoding()
    counts = [int(n) for n in args.viewers.split(",")]
    with tempfile.TemporaryDirectory(prefix="safetynet-relay-bench-") as tmp:
        folder = Path(tmp)
        key = folder / f"{RELAY}.key"
        write_public_key(key.with_suffix(".pub"), load_or_create_signing_key(key))
        results = []
        async with MediaRig([CAMERA.camera_id], gop_s=1.0, fps=args.fps, size=args.size,
                            bitrate_kbps=args.bitrate,
                            core_options={"relay_keys": {RELAY: key.with_suffix(".pub")}}) as rig:
            assert rig.core is not None and rig.core.relays is not None
            relay = await start_relay(rig, key)
            try:
                await rig.core.relays.wait_until(lambda desk: RELAY in desk.online, 30)
                for viewers in counts:
                    for via_relay in (False, True):
                        result = await measure(rig, relay, viewers, via_relay, args)
                        print(json.dumps(result), flush=True)
                        results.append(result)
            finally:
                relay.terminate()
                await relay.wait()
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="10,30")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one CPU window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--fps", type=int, default=15)
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")),
                        default=(1280, 720))
    parser.add_argument("--bitrate", type=int, default=2500, help="camera kb/s")
    parser.add_argument("--json", action="store_true", help="print one JSON document at the end")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    configure_logging("warning")
    figures = asyncio.run(main(arguments))
    if arguments.json:
        print(json.dumps({"bench": "relay_fanout", "results": figures}, indent=1))
