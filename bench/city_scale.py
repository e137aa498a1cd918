"""City-scale figures of the core (25 districts, 68,000 cameras), as JSON. Not a timed test.

    python bench/city_scale.py [--cameras 68000] [--runs 3] [--publishers 4]

The core runs on this process's event loop and nothing else heavy does: every client (MQTT
publishers, SSE consoles, gRPC callers) is a child process, the near queries a thread, so the
figures are the core's and the loop lag reported is the core's own.

- reconnect burst: what every district's agent publishes on (re)connecting, all at once from
  ``--publishers`` child processes (raw paho, one client per district, unlimited in flight): its
  retained online status and its retained snapshot (the heartbeat: every camera's status);
  seconds until the registry holds every camera's newest status (target <= 5 s p50). Counted,
  not assumed: each camera's stored status is compared with what was published last.
  ``reconnect_per_camera_s`` is the same burst the way agents published it before snapshots:
  one retained message per camera, 68,000 MQTT messages.
- sustained ingest: three rounds of a change of every camera back to back, as agents send
  changes (``CameraChanges``: each district's changes in messages of at most 1,000 cameras);
  statuses/s until the registry is current (target >= 20,000/s), statuses lost (target 0). The
  publishers' own rate is reported. ``sustained_ingest_per_camera_per_s`` is the same with one
  message per change, as agents sent them before (and older agents still do).
- core restart: a fresh core subscribing to a broker that retains the city (snapshots and each
  camera's latest change); seconds until its registry is current.
- gRPC health-check p99 while 30 SSE consoles follow and the city heartbeats (<= 50 ms).
- core CPU per connected idle console (<= 0.5 % of a core).
- near query 3 km p99 (<= 10 ms), in a thread on a registry connection of its own.
- paging every camera over gRPC with the maximum page size (<= 1 s).
Each step reports its error in the JSON instead of stopping the others. Figures are min/p50/max
over the runs, with the load average before and after each step: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import random
import sqlite3
import statistics
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from cloud_core.config import CoreConfig
from cloud_core.page_token import MAX_PAGE_SIZE
from cloud_core.registry import Registry
from cloud_core.server import CoreServer
from edge_agent.status_reporter import MAX_CHANGES_PER_MESSAGE
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerSettings
from safetynet.broker import MosquittoBroker
from simulators.city import CityCamera, district_cameras, districts

SPAWN = multiprocessing.get_context("spawn")
CONSOLES = 30
STEPS = ("reconnect_burst_s", "reconnect_per_camera_s", "sustained_ingest_per_s",
         "sustained_ingest_per_camera_per_s", "core_restart_burst_s", "near_3km_p99_ms",
         "page_all_s", "consoles")
#: How a publisher sends a round: each district's snapshot (one retained heartbeat), its
#: changes as agents send them, or one message per camera.
SNAPSHOT, CHANGES, PER_CAMERA = "snapshot", "changes", "per_camera"
HEARTBEAT_PERIOD = 5.0
LAST_ROUND = [0]         # the round last published: heartbeats repeat it, as an agent's do   # every district's heartbeat once per 5 s: 6x an agent's 30 s


@cache
def _city(total: int) -> dict[str, tuple[CityCamera, ...]]:
    return {d.district_id: district_cameras(d) for d in districts(total)}


def _online(index: int, round_: int) -> bool:
    return (index + round_) % 4 != 0


def _status(camera: CityCamera, online: bool, changed_at: Any = None) -> mqtt_pb2.CameraStatus:
    """``changed_at``: a Timestamp, as an agent stamps every change (None: unstamped)."""
    return mqtt_pb2.CameraStatus(
        state=mqtt_pb2.CAMERA_STATE_ONLINE if online else mqtt_pb2.CAMERA_STATE_OFFLINE,
        camera=mqtt_pb2.CameraDescriptor(camera_id=camera.camera_id, district_id=camera.district_id,
                                         name=camera.name, lat=camera.lat, lon=camera.lon),
        changed_at=changed_at)


def _stamp() -> Any:
    from google.protobuf.timestamp_pb2 import Timestamp

    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


def _expected(total: int, round_: int) -> dict[str, str]:
    return {c.camera_id: "online" if _online(i, round_) else "offline"
            for cameras in _city(total).values() for i, c in enumerate(cameras)}


# --- child processes --------------------------------------------------------------------------

ACKED: dict[Any, int] = {}   # a publisher child's clients -> their messages acknowledged


def _connect(port: int, client_id: str) -> Any:
    import paho.mqtt.client as paho  # only the bench's clients use paho directly
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    client.max_inflight_messages_set(0)   # no window: the publisher never waits on acks
    client.max_queued_messages_set(0)
    ACKED[client] = 0
    client.on_publish = lambda c, _u, _mid, _rc, _p: ACKED.__setitem__(c, ACKED[c] + 1)
    client.connect("127.0.0.1", port)
    while not client.is_connected():
        client.loop(0.05)
    return client


def _messages(cameras: int, mode: str) -> int:
    """How many messages a district of ``cameras`` publishes per round in ``mode``."""
    if mode == SNAPSHOT:
        return 1
    if mode == CHANGES:
        return -(-cameras // MAX_CHANGES_PER_MESSAGE)
    return cameras


def _publisher(port: int, district_ids: Sequence[str], total: int, rounds: Sequence[int],
               mode: str, ready: Any, go: Any, out: Any) -> None:
    """Child: each district's agent status, then per round either its snapshot (one heartbeat
    with every camera, as an agent sends on reconnecting), its changes (``CameraChanges`` of
    at most ``MAX_CHANGES_PER_MESSAGE``, as an agent sends them) or every camera's own status
    message (QoS 1, stamped; the snapshot and the agent status retained)."""
    city = _city(total)
    clients = {d: _connect(port, f"bench-{d}") for d in district_ids}
    work = [(clients[d], topics.agent_status(d), mqtt_pb2.AgentStatus(
        district_id=d, agent_id=d, state=mqtt_pb2.AGENT_STATE_ONLINE).SerializeToString(), True)
        for d in district_ids]
    for round_ in rounds:
        stamp = _stamp()
        for d in district_ids:
            statuses = [_status(c, _online(i, round_), stamp) for i, c in enumerate(city[d])]
            if mode == SNAPSHOT:
                work.append((clients[d], topics.heartbeat(d), mqtt_pb2.Heartbeat(
                    district_id=d, agent_id=d, sent_at=stamp, cameras=statuses).SerializeToString(),
                    True))
            elif mode == CHANGES:
                work += [(clients[d], topics.camera_changes(d), mqtt_pb2.CameraChanges(
                    district_id=d, sent_at=stamp,
                    cameras=statuses[k:k + MAX_CHANGES_PER_MESSAGE]).SerializeToString(), False)
                    for k in range(0, len(statuses), MAX_CHANGES_PER_MESSAGE)]
            else:  # a camera's own status is a change: not retained, as an agent sends it
                work += [(clients[d], topics.camera_status(d, s.camera.camera_id),
                          s.SerializeToString(), False) for s in statuses]
    ready.set()
    go.wait()
    started = time.perf_counter()
    published = dict.fromkeys(clients.values(), 0)
    for n, (client, topic, payload, retain) in enumerate(work):
        client.publish(topic, payload, qos=1, retain=retain)
        published[client] += 1
        if n % 256 == 0:
            for c in clients.values():
                c.loop(0)
    sent = time.perf_counter() - started
    while any(ACKED[c] < count for c, count in published.items()):
        for c in clients.values():
            c.loop(0.005)
    out.put({"messages": len(work), "sent_s": sent, "acked_s": time.perf_counter() - started})
    for c in clients.values():
        c.disconnect()


def _heartbeater(port: int, total: int, round_: int, period: float, ready: Any, stop: Any,
                 out: Any) -> None:
    """Child: every district's heartbeat (all its cameras, as last published) once per
    ``period``, evenly spread."""
    city = _city(total)
    client = _connect(port, "bench-heartbeats")
    beats = [(topics.heartbeat(d), mqtt_pb2.Heartbeat(district_id=d, cameras=[
        _status(c, _online(i, round_)) for i, c in enumerate(cams)]).SerializeToString())
        for d, cams in city.items()]
    ready.set()
    sent, gap, due = 0, period / len(beats), time.monotonic()
    while not stop.is_set():
        topic, payload = beats[sent % len(beats)]
        client.publish(topic, payload, qos=0)
        sent += 1
        due += gap
        while (left := due - time.monotonic()) > 0:
            client.loop(min(left, 0.05))
    out.put({"heartbeats": sent})
    client.disconnect()


def _consoles(url: str, token: str, n: int, ready: Any, stop: Any, out: Any) -> None:
    """Child: ``n`` consoles, each with the snapshot and a followed SSE stream, until ``stop``."""
    import aiohttp

    async def main() -> None:
        counts = [0] * n
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            async with http.get(f"{url}/api/cameras") as response:
                version = (await response.json())["version"]
            first = [asyncio.Event() for _ in range(n)]

            async def follow(k: int) -> None:
                async with http.get(f"{url}/api/cameras/events", params={"since": str(version)},
                                    timeout=aiohttp.ClientTimeout(total=None)) as stream:
                    async for line in stream.content:
                        if line.startswith(b"event:"):
                            counts[k] += 1
                            first[k].set()

            tasks = [asyncio.create_task(follow(k)) for k in range(n)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first)), 30)
            ready.set()
            await asyncio.to_thread(stop.wait)
            for task in tasks:
                task.cancel()
            ended = await asyncio.gather(*tasks, return_exceptions=True)
        out.put({"events": sum(counts), "ended_early": sum(
            1 for e in ended if not isinstance(e, asyncio.CancelledError))})

    asyncio.run(main())


def _health_checks(address: str, seconds: float, out: Any) -> None:
    """Child: a gRPC health check every 10 ms for ``seconds``; the round trips, seconds."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    samples = []
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            samples.append(time.perf_counter() - started)
            time.sleep(0.01)
    out.put(samples)


def _page_all(address: str, token: str, out: Any) -> None:
    """Child: every camera over gRPC, pages of the maximum size; (seconds, cameras)."""
    import grpc

    from protos.safetynet.v1 import core_pb2, core_pb2_grpc

    auth = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(address) as channel:
        stub = core_pb2_grpc.CameraServiceStub(channel)
        stub.ListCameras(core_pb2.ListCamerasRequest(page_size=1), metadata=auth)
        started, count, page_token = time.perf_counter(), 0, ""
        while True:
            page = stub.ListCameras(core_pb2.ListCamerasRequest(
                page_size=MAX_PAGE_SIZE, page_token=page_token), metadata=auth)
            count += len(page.cameras)
            page_token = page.next_page_token
            if not page_token:
                out.put((time.perf_counter() - started, count))
                return


class _Child:
    """A spawned child process with a result queue and start/stop events."""

    def __init__(self, target: Callable[..., None], *args: Any, events: int = 0) -> None:
        self.out = SPAWN.Queue()
        self.events = [SPAWN.Event() for _ in range(events)]
        self.process = SPAWN.Process(target=target, args=(*args, *self.events, self.out),
                                     daemon=True)

    async def start(self) -> _Child:
        await asyncio.to_thread(self.process.start)  # fork+exec off the core's loop
        return self

    async def wait(self, event: int, timeout: float = 60) -> None:
        if not await asyncio.to_thread(self.events[event].wait, timeout):
            raise TimeoutError(f"{self.process.name} not ready in {timeout} s")

    async def result(self, timeout: float = 120) -> Any:
        value = await asyncio.to_thread(self.out.get, True, timeout)
        await asyncio.to_thread(self.process.join, 10)
        return value

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()


# --- steps ------------------------------------------------------------------------------------

def _stats(values: Sequence[float], unit: str, target: str, **extra: Any) -> dict[str, Any]:
    return {"min": round(min(values), 4), "p50": round(statistics.median(values), 4),
            "max": round(max(values), 4), "unit": unit, "target": target, "runs": len(values),
            **extra}


def _p99(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _mismatches(database: Path, expected: dict[str, str]) -> int:
    """Cameras whose stored status is not the one last published (missing ones included)."""
    with sqlite3.connect(database) as conn:
        stored = dict(conn.execute("SELECT camera_id, status FROM cameras").fetchall())
    return sum(1 for camera_id, status in expected.items() if stored.get(camera_id) != status)


async def _publish_rounds(core: CoreServer, port: int, total: int, rounds: Sequence[int],
                          publishers: int, *, mode: str = PER_CAMERA) -> dict[str, Any]:
    """Publish ``rounds`` from child processes; time until the registry holds the last round."""
    names = list(_city(total))
    children = [_Child(_publisher, port, names[k::publishers], total, rounds, mode, events=2)
                for k in range(publishers)]
    try:
        for child in children:
            await child.start()
        for child in children:
            await child.wait(0)
        city = _city(total)
        messages = len(names) + sum(_messages(len(city[d]), mode) for d in names) * len(rounds)
        before = core.ingest.received
        started = time.perf_counter()
        for child in children:
            child.events[1].set()

        def arrived(_: object) -> bool:
            return core.ingest.received - before >= messages and core.ingest.pending == 0

        timed_out = False
        try:
            await core.wait_until(arrived, 30)
            await core.ingest.drained(30)
        except TimeoutError:
            timed_out = True
        elapsed = time.perf_counter() - started
        sent = [await child.result() for child in children]
    finally:
        for child in children:
            child.kill()
    LAST_ROUND[0] = rounds[-1]
    expected = await asyncio.to_thread(_expected, total, rounds[-1])
    wrong = await asyncio.to_thread(_mismatches, core.config.database, expected)
    publisher_s = max(s["acked_s"] for s in sent)
    return {"seconds": elapsed, "timed_out": timed_out, "messages": messages,
            "statuses": total * len(rounds),
            "received": core.ingest.received - before, "wrong_or_missing": wrong,
            "publishers_per_s": round(sum(s["messages"] for s in sent) / publisher_s)}


async def _bursts(core: CoreServer, port: int, total: int, runs: int, publishers: int, *,
                  mode: str = SNAPSHOT) -> dict[str, Any]:
    first = 1 if mode == SNAPSHOT else 100
    results = [await _publish_rounds(core, port, total, [r], publishers, mode=mode)
               for r in range(first, first + runs)]
    return _stats([r["seconds"] for r in results], "s", "<= 5 (p50)",
                  lost=[r["wrong_or_missing"] for r in results],
                  publishers_per_s=[r["publishers_per_s"] for r in results],
                  timed_out=[r["timed_out"] for r in results])


async def _sustained(core: CoreServer, port: int, total: int, runs: int, publishers: int,
                     mode: str = CHANGES) -> dict[str, Any]:
    first = 10 if mode == CHANGES else 40
    results = [await _publish_rounds(core, port, total, [first + 3 * k, first + 1 + 3 * k,
                                                         first + 2 + 3 * k], publishers, mode=mode)
               for k in range(runs)]
    # Every status of the three rounds was published; what the registry lacks of the last
    # round, and every message that never arrived, is lost.
    return _stats([r["statuses"] / r["seconds"] for r in results], "statuses/s", ">= 20000",
                  messages=[r["messages"] for r in results],
                  received=[r["received"] for r in results],
                  lost=[r["wrong_or_missing"] + r["messages"] - r["received"] for r in results],
                  publishers_per_s=[r["publishers_per_s"] for r in results])


async def _core_restart(core: CoreServer, port: int, total: int, runs: int,
                        publishers: int) -> dict[str, Any]:
    """A fresh core subscribing to a broker that retains the city: the broker replays 68,000
    statuses as fast as it can send, so this is the core's own ingest rate, not the bench's."""
    times, lost = [], []
    for k in range(runs):
        round_ = 20 + k
        await _publish_rounds(core, port, total, [round_], publishers, mode=SNAPSHOT)
        config = replace(core.config, database=core.config.database.with_name(f"restart-{k}.sqlite3"),
                         audit_database_file=core.config.database.with_name(f"restart-{k}-audit.sqlite3"),
                         client_id=f"bench-restarted-core-{k}", http_listen="")
        started = time.perf_counter()
        async with CoreServer(config) as fresh:

            def current(_: object, f: CoreServer = fresh) -> bool:
                return f.ingest.ingested >= total and f.ingest.pending == 0

            try:
                await fresh.wait_until(current, 30)
                await fresh.ingest.drained(30)
            except TimeoutError:
                pass
            times.append(time.perf_counter() - started)
        expected = await asyncio.to_thread(_expected, total, round_)
        lost.append(await asyncio.to_thread(_mismatches, config.database, expected))
    return _stats(times, "s", "<= 5 (p50)", statuses_per_s=[round(total / t) for t in times],
                  lost=lost)


def _near_samples(database: Path, count: int) -> list[float]:
    registry = Registry(database)  # a connection of this thread's own
    try:
        rng, samples = random.Random(7), []
        for _ in range(count):
            lat, lon = rng.uniform(37.48, 37.62), rng.uniform(126.88, 127.10)
            started = time.perf_counter()
            registry.list_cameras(near=(lat, lon, 3000), limit=50)
            samples.append(time.perf_counter() - started)
        return samples
    finally:
        registry.close()


async def _near(core: CoreServer, runs: int) -> dict[str, Any]:
    p99s = [_p99(await asyncio.to_thread(_near_samples, core.config.database, 300)) * 1000
            for _ in range(runs)]
    return _stats(p99s, "ms", "<= 10")


async def _paging(core: CoreServer, token: str, total: int, runs: int) -> dict[str, Any]:
    times = []
    for _ in range(runs):
        seconds, count = await (await _Child(_page_all, core.address, token).start()).result()
        if count != total:
            raise AssertionError(f"paged {count} cameras, the registry has {total}")
        times.append(seconds)
    return _stats(times, "s", "<= 1")


async def _cpu(seconds: float) -> float:
    """This process's CPU (the core's) over ``seconds``, as a fraction of one core."""
    before, started = os.times(), time.perf_counter()
    await asyncio.sleep(seconds)
    after = os.times()
    return (after.user + after.system - before.user - before.system) / (time.perf_counter() - started)


async def _consoles_steps(core: CoreServer, token: str, port: int, total: int,
                          runs: int) -> dict[str, Any]:
    assert core.console is not None
    result: dict[str, Any] = {}
    baseline = await _cpu(10)
    consoles = await _Child(_consoles, core.console.url.rstrip("/"), token, CONSOLES,
                            events=2).start()
    heartbeats: _Child | None = None
    try:
        await consoles.wait(0)
        idle = [(await _cpu(15) - baseline) / CONSOLES * 100 for _ in range(runs)]
        result["idle_cpu_per_console_pct"] = _stats(
            idle, "% of a core", "<= 0.5", baseline_pct=round(baseline * 100, 2),
            consoles=CONSOLES, window_s=15)
        heartbeats = await _Child(_heartbeater, port, total, LAST_ROUND[0], HEARTBEAT_PERIOD,
                                   events=2).start()
        await heartbeats.wait(0)
        core.loop_monitor.mark()
        p99s = []
        for _ in range(runs):
            samples = await (await _Child(_health_checks, core.address, 5.0).start()).result()
            p99s.append(_p99(samples) * 1000)
        result["health_p99_30_consoles_heartbeats_ms"] = _stats(
            p99s, "ms", "<= 50", heartbeat_every_s=HEARTBEAT_PERIOD,
            loop_lag_worst_ms=round(core.loop_monitor.mark() * 1000, 1))
        heartbeats.events[1].set()
        result["heartbeats_sent"] = (await heartbeats.result())["heartbeats"]
        consoles.events[1].set()
        result["console_streams"] = await consoles.result()
    finally:
        consoles.kill()
        if heartbeats is not None:
            heartbeats.kill()
    return result


async def _step(result: dict[str, Any], name: str, core: CoreServer,
                step: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    """Run one step; its error goes into the JSON and the next step runs anyway."""
    load_before = os.getloadavg()
    core.loop_monitor.mark()
    try:
        value = await step()
    except Exception as exc:
        value = {"error": f"{type(exc).__name__}: {exc}",
                 "where": traceback.format_exc().strip().splitlines()[-3:]}
    value.setdefault("loop_lag_worst_ms", round(core.loop_monitor.mark() * 1000, 1))
    value["load"] = [load_before, os.getloadavg()]
    result[name] = value


async def _run(total: int, runs: int, publishers: int, only: Sequence[str]) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="city-bench-"))
    await asyncio.to_thread(_city, total)
    result: dict[str, Any] = {"cameras": total, "districts": 25, "runs": runs,
                              "publisher_processes": publishers, "cpus": os.cpu_count(),
                              "load_before": os.getloadavg()}
    async with MosquittoBroker() as broker:
        settings = BrokerSettings(host=broker.host, port=broker.port)
        config = CoreConfig(database=tmp / "core.sqlite3", listen="127.0.0.1:0", broker=settings,
                            http_listen="127.0.0.1:0")
        async with CoreServer(config) as core:
            await core.wait_connected()
            gc.freeze()  # as run_core does; the bench's own city tables are frozen with it
            assert core.access is not None
            _, token = core.access.operators.add("bench", agency="police-112", role="operator",
                                                 policy=core.access.policy)
            port = broker.port
            steps: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
                "reconnect_burst_s": lambda: _bursts(core, port, total, runs, publishers),
                "reconnect_per_camera_s": lambda: _bursts(core, port, total, runs, publishers,
                                                          mode=PER_CAMERA),
                "sustained_ingest_per_s": lambda: _sustained(core, port, total, runs, publishers),
                "sustained_ingest_per_camera_per_s": lambda: _sustained(
                    core, port, total, runs, publishers, mode=PER_CAMERA),
                "core_restart_burst_s": lambda: _core_restart(core, port, total, runs, publishers),
                "near_3km_p99_ms": lambda: _near(core, runs),
                "page_all_s": lambda: _paging(core, token, total, runs),
                "consoles": lambda: _consoles_steps(core, token, port, total, runs),
            }
            # Every step needs the city in the registry: the first burst puts it there.
            if "reconnect_burst_s" not in only:
                await _publish_rounds(core, port, total, [0], publishers, mode=SNAPSHOT)
            for name, step in steps.items():
                if name in only:
                    await _step(result, name, core, step)
            result["dropped"] = {"ingest": core.ingest.dropped, "rejected": core.ingest.rejected,
                                 "broker_log": [line for line in broker.log_lines
                                                if "dropped" in line.lower()][-5:]}
            result["loop_lag_worst_ms"] = round(core.loop_monitor.worst_ever * 1000, 1)
    result["load_after"] = os.getloadavg()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=68_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--publishers", type=int, default=4, help="publisher processes")
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"comma-separated steps, of: {', '.join(STEPS)}")
    args = parser.parse_args()
    configure_logging("warning")  # stderr: stdout is the JSON
    only = [name for name in args.only.split(",") if name]
    if unknown := set(only) - set(STEPS):
        parser.error(f"unknown step(s): {', '.join(sorted(unknown))}")
    print(json.dumps(asyncio.run(_run(args.cameras, args.runs, args.publishers, only)), indent=2))


if __name__ == "__main__":
    main()
