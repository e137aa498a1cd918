"""City-scale figures of the core (25 districts, 68,000 cameras), as JSON. Not a timed test.

    python bench/city_scale.py [--cameras 68000] [--runs 3]

- reconnect burst: every district's retained statuses published at once from a child process
  (paho, one client per district) to a real Mosquitto; seconds until the registry holds all of
  them, current (target <= 5 s, p50 of the runs); lost statuses must be 0.
- sustained ingest: statuses/s written while publishers keep going (target >= 20,000/s).
- near query 3 km p99 (target <= 10 ms), in-process on the core's registry.
- paging every camera over gRPC with the maximum page size (target <= 1 s).
- gRPC health-check p99 while 30 console streams follow and the city heartbeats (<= 50 ms).
- core CPU per idle console stream (target <= 0.5 % of a core).
Each figure as min/p50/max over the runs, with the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloud_core.config import CoreConfig
from cloud_core.page_token import MAX_PAGE_SIZE
from cloud_core.server import CoreServer
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.mqtt_link import BrokerSettings
from safetynet.broker import MosquittoBroker
from simulators.city import district_cameras, districts


def _payloads(total: int, round_: int) -> dict[str, list[tuple[str, bytes]]]:
    out: dict[str, list[tuple[str, bytes]]] = {}
    for d in districts(total):
        out[d.district_id] = [(topics.camera_status(d.district_id, c.camera_id), mqtt_pb2.CameraStatus(
            state=mqtt_pb2.CAMERA_STATE_ONLINE if (i + round_) % 4 else mqtt_pb2.CAMERA_STATE_OFFLINE,
            camera=mqtt_pb2.CameraDescriptor(camera_id=c.camera_id, district_id=c.district_id,
                                             name=c.name, lat=c.lat, lon=c.lon)).SerializeToString())
            for i, c in enumerate(district_cameras(d))]
    return out


def _publish(port: int, total: int, round_: int, heartbeat: bool, ready: Any, go: Any) -> None:
    """Child process: one paho client per district publishing everything (QoS 1, retained)."""
    import paho.mqtt.client as paho  # only the publishers use paho directly

    work = _payloads(total, round_)
    clients = []
    for district in work:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-{district}")
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect("127.0.0.1", port)
        client.loop_start()
        clients.append((district, client))
    ready.set()
    go.wait()
    for district, client in clients:
        client.publish(topics.agent_status(district), mqtt_pb2.AgentStatus(
            district_id=district, agent_id=district, state=mqtt_pb2.AGENT_STATE_ONLINE
        ).SerializeToString(), qos=1, retain=True)
        if heartbeat:
            beat = mqtt_pb2.Heartbeat(district_id=district, cameras=[
                mqtt_pb2.CameraStatus.FromString(p) for _, p in work[district]])
            client.publish(topics.heartbeat(district), beat.SerializeToString(), qos=0)
        else:
            for topic, payload in work[district]:
                client.publish(topic, payload, qos=1, retain=True)
    for _, client in clients:
        while client.want_write() or len(client._out_messages):
            time.sleep(0.01)
        client.disconnect()
        client.loop_stop()


async def _burst(core: CoreServer, port: int, total: int, round_: int, heartbeat: bool) -> float:
    """Seconds until all ``total`` statuses are written; inf when some never arrive (see ``lost``)."""
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_publish, args=(port, total, round_, heartbeat, ready, go))
    child.start()
    await asyncio.to_thread(ready.wait)
    before = core.ingest.ingested
    started = time.perf_counter()
    go.set()
    expected = total  # a heartbeat carries every camera too

    def done(_: object) -> bool:
        return core.ingest.ingested - before >= expected and core.ingest.pending == 0

    try:
        await core.wait_until(done, 30)
        elapsed = time.perf_counter() - started
    except TimeoutError:
        elapsed = float("inf")
        LOST.append(expected - (core.ingest.ingested - before))
    await asyncio.to_thread(child.join)
    return elapsed


LOST: list[int] = []  # statuses that never reached the registry, per burst that timed out


def _stats(values: list[float], unit: str, target: str) -> dict[str, Any]:
    return {"min": round(min(values), 4), "p50": round(statistics.median(values), 4),
            "max": round(max(values), 4), "unit": unit, "target": target, "runs": len(values)}


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _near_p99(core: CoreServer) -> float:
    assert core.registry is not None
    rng, samples = random.Random(7), []
    for _ in range(300):
        lat, lon = rng.uniform(37.48, 37.62), rng.uniform(126.88, 127.10)
        started = time.perf_counter()
        core.registry.list_cameras(near=(lat, lon, 3000), limit=50)
        samples.append(time.perf_counter() - started)
    return _p99(samples) * 1000


async def _page_all(core: CoreServer, token: str) -> tuple[float, int]:
    auth = [("authorization", f"Bearer {token}")]
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.CameraServiceStub(channel)
        started, count, page_token = time.perf_counter(), 0, ""
        while True:
            page = await stub.ListCameras(core_pb2.ListCamerasRequest(
                page_size=MAX_PAGE_SIZE, page_token=page_token), metadata=auth)
            count += len(page.cameras)
            page_token = page.next_page_token
            if not page_token:
                return time.perf_counter() - started, count


async def _streams(core: CoreServer, token: str, n: int) -> tuple[aiohttp.ClientSession, list[Any]]:
    assert core.console is not None
    http = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})
    url = core.console.url.rstrip("/")
    async with http.get(f"{url}/api/cameras") as response:
        version = (await response.json())["version"]

    async def follow() -> None:
        async with http.get(f"{url}/api/cameras/events", params={"since": str(version)},
                            timeout=aiohttp.ClientTimeout(total=None)) as stream:
            async for _ in stream.content:
                pass

    return http, [asyncio.create_task(follow()) for _ in range(n)]


async def _health_p99(core: CoreServer, seconds: float) -> float:
    samples = []
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            await stub.Check(health_pb2.HealthCheckRequest())
            samples.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    return _p99(samples) * 1000


async def _idle_cpu(seconds: float) -> float:
    before, started = os.times(), time.perf_counter()
    await asyncio.sleep(seconds)
    after = os.times()
    return (after.user + after.system - before.user - before.system) / (time.perf_counter() - started)


async def _run(total: int, runs: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="city-bench-"))
    result: dict[str, Any] = {"cameras": total, "districts": 25, "load_before": os.getloadavg()}
    async with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port)
        config = CoreConfig(database=tmp / "core.sqlite3", listen="127.0.0.1:0", broker=settings,
                            http_listen="127.0.0.1:0")
        async with CoreServer(config) as core:
            await core.wait_connected()
            assert core.access is not None
            _, token = core.access.operators.add("bench", agency="police-112", role="operator",
                                                 policy=core.access.policy)
            bursts = [await _burst(core, broker.port, total, r, False) for r in range(runs)]
            result["reconnect_burst_s"] = _stats(bursts, "s", "<= 5 (p50)")
            result["sustained_ingest_per_s"] = _stats([total / b for b in bursts], "statuses/s", ">= 20000")
            result["lost_statuses"] = {"ingest_dropped": core.ingest.dropped, "never_arrived": LOST}
            result["near_3km_p99_ms"] = _stats([await _near_p99(core) for _ in range(runs)], "ms", "<= 10")
            pages = [await _page_all(core, token) for _ in range(runs)]
            assert all(count == total for _, count in pages)
            result["page_all_s"] = _stats([t for t, _ in pages], "s", "<= 1")
            baseline = await _idle_cpu(5)
            http, followers = await _streams(core, token, 30)
            per_console = (await _idle_cpu(10) - baseline) / 30 * 100
            result["idle_cpu_per_console_pct"] = _stats([per_console], "% of a core", "<= 0.5")
            heartbeat = asyncio.create_task(_burst(core, broker.port, total, runs, True))
            health = [await _health_p99(core, 3) for _ in range(runs)]
            await heartbeat
            result["health_p99_30_streams_heartbeat_ms"] = _stats(health, "ms", "<= 50")
            result["loop_lag_worst_ms"] = round(core.loop_monitor.worst_ever * 1000, 1)
            for task in followers:
                task.cancel()
            await asyncio.gather(*followers, return_exceptions=True)
            await http.close()
    result["load_after"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=68_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_run(args.cameras, args.runs)), indent=2))


if __name__ == "__main__":
    main()
