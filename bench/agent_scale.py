"""An agent at district scale: idle CPU and memory with 2,720 cameras, and its probe cycle.

    python bench/agent_scale.py [--cameras 2720] [--dead 0.3] [--windows 3] [--window-s 20]
                                [--cycles 2] [--out result.json]

A real ``safetynet agent`` process with 2,720 RTSP cameras (the city's 68,000 / 25), a real
Mosquitto broker, and a camera farm in another process: one loopback RTSP listener answering
every working camera's DESCRIBE with an H.264 SDP, and one that accepts connections and never
answers, for the ``--dead`` fraction (each probe of those waits its whole 5 s timeout). Nobody
watches, so the agent only probes, reports status and sends heartbeats: its idle cost.

Measured: the probe cycle (the agent's own ``safetynet_agent_probe_cycle_seconds`` from
/metrics) for ``--cycles`` full cycles, then, in steady state, the agent's CPU (% of one core)
over ``--windows`` windows and its RSS. Targets: ≤ 1 % CPU, ≤ 100 MB RSS, cycle ≤ 120 s (+ 5 %) with 30 % dead.
The farm's CPU is not the agent's and is not counted. Prints JSON (min/p50/max, load average).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from safetynet.broker import MosquittoBroker, free_port
from simulators.city import district_cameras, districts

SDP = ("v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=cam\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
       "a=rtpmap:96 H264/90000\r\na=control:track1\r\n")


# --- the camera farm (run as a child process: its CPU is not the agent's) ---------------------

async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            cseq = re.search(rb"CSeq: *(\d+)", head)
            body = SDP.encode()
            writer.write(b"RTSP/1.0 200 OK\r\nCSeq: " + (cseq[1] if cseq else b"1")
                         + b"\r\nContent-Type: application/sdp\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.read()  # never answer; wait for the prober to give up
    finally:
        writer.close()


async def serve_farm(alive_port: int, dead_port: int) -> None:
    alive = await asyncio.start_server(_answer, "127.0.0.1", alive_port, backlog=1024)
    dead = await asyncio.start_server(_silent, "127.0.0.1", dead_port, backlog=1024)
    print("ready", flush=True)
    async with alive, dead:
        await asyncio.Event().wait()


# --- the agent under test ----------------------------------------------------------------------

def agent_config(path: Path, *, cameras: int, dead: float, broker_port: int, alive_port: int,
                 dead_port: int, metrics_port: int) -> Path:
    gangnam = next(d for d in districts(cameras * 25) if d.district_id == "gangnam")
    placed = district_cameras(gangnam)[:cameras]
    every_dead = round(1 / dead) if dead > 0 else 0
    lines = ['[district]', 'id = "gangnam"', 'name = "Gangnam-gu"', '', '[agent]',
             'heartbeat_seconds = 30', '', '[broker]', 'host = "127.0.0.1"',
             f'port = {broker_port}', '', '[metrics]', f'port = {metrics_port}', '']
    dead_ids = set()
    if dead > 0:
        dead_ids = {c.camera_id for c in placed[::max(1, every_dead)]}
        while len(dead_ids) < round(dead * len(placed)):  # top up to the exact fraction
            dead_ids.add(next(c.camera_id for c in placed if c.camera_id not in dead_ids))
    for camera in placed:
        port = dead_port if camera.camera_id in dead_ids else alive_port
        lines += ["[[cameras]]", f'id = "{camera.camera_id}"', f'name = "{camera.name}"',
                  f"lat = {camera.lat}", f"lon = {camera.lon}",
                  f'source = "rtsp://127.0.0.1:{port}/cam/{camera.camera_id}"', ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def scrape(url: str) -> dict[str, float]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {"min": round(min(values), 3), "p50": round(statistics.median(values), 3),
            "max": round(max(values), 3), "n": len(values)}


async def wait_for_metrics(url: str, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(60):
        while process.returncode is None:
            try:
                await scrape(url)
                return
            except aiohttp.ClientError:
                await asyncio.sleep(0.2)  # the agent is still starting: no event to wait on
    raise RuntimeError("the agent exited before serving /metrics")


async def probe_cycles(url: str, count: int) -> tuple[list[float], float | None]:
    """The agent's next ``count`` completed probe cycles, as its /metrics reports them."""
    cycles: list[float] = []
    seen = None
    key = 'safetynet_agent_probe_cycle_seconds{district="gangnam"}'
    deadline = time.monotonic() + count * 200 + 200
    metrics: dict[str, float] = {}
    while len(cycles) < count and time.monotonic() < deadline:
        metrics = await scrape(url)
        if key in metrics and metrics[key] != seen:
            seen = metrics[key]
            cycles.append(seen)
            print(f"probe cycle {seen:.1f} s", file=sys.stderr, flush=True)
        await asyncio.sleep(2)  # the cycle is minutes long; a scrape every 2 s is plenty
    return cycles, metrics.get('safetynet_agent_probe_slots_lent_total{district="gangnam"}')


async def measure(args: argparse.Namespace, pid: int, url: str) -> dict[str, Any]:
    # The first cycle publishes every camera's probed state once: a start-up cost, not idle.
    cycles, lent = await probe_cycles(url, args.cycles)
    cpu, rss = [], []
    for _ in range(args.windows):
        before, started = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(args.window_s)
        cpu.append(100 * (cpu_seconds(pid) - before) / (time.monotonic() - started))
        rss.append(rss_mb(pid))
    return {"cpu_percent_of_core": stats(cpu), "rss_mb": stats(rss),
            "probe_cycle_seconds": stats(cycles), "probe_slots_lent": lent}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="agent-scale-") as tmp:
        alive_port, dead_port, metrics_port = free_port(), free_port(), free_port()
        farm = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--farm", str(alive_port), str(dead_port),
            stdout=asyncio.subprocess.PIPE)
        assert farm.stdout is not None
        await farm.stdout.readline()
        try:
            async with MosquittoBroker(work_dir=Path(tmp)) as broker:
                config = agent_config(Path(tmp) / "agent.toml", cameras=args.cameras,
                                      dead=args.dead, broker_port=broker.port,
                                      alive_port=alive_port, dead_port=dead_port,
                                      metrics_port=metrics_port)
                agent = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "safetynet", "agent", "--config", str(config),
                    "--log-level", "warning")
                url = f"http://127.0.0.1:{metrics_port}/metrics"
                try:
                    started = time.monotonic()
                    await wait_for_metrics(url, agent)
                    result = {"start_seconds": round(time.monotonic() - started, 2),
                              **await measure(args, agent.pid, url)}
                finally:
                    agent.terminate()
                    await agent.wait()
        finally:
            farm.terminate()
            await farm.wait()
    return result


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--farm":
        asyncio.run(serve_farm(int(sys.argv[2]), int(sys.argv[3])))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, default=2720)
    parser.add_argument("--dead", type=float, default=0.3, help="fraction of cameras not answering")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    result = asyncio.run(run(args))
    report = {"bench": "agent_scale", "cameras": args.cameras, "dead_fraction": args.dead,
              "targets": {"cpu_percent_of_core": 1.0, "rss_mb": 100, "probe_cycle_seconds": 120},
              **result, "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
