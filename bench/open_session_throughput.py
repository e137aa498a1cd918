"""Authorized OpenSession decisions per second through the real core.

The core runs as its own process (``safetynet core``) against a Mosquitto of its own; a stub agent
(another process) answers every offer at once, so what is measured is the core's path:
authentication, policy decision, grant signing, audit writes (durable, group-committed), the MQTT
relay to the agent and back, and the session record. The load comes from this process: N
concurrent gRPC callers, spread over ten operators of police-112 (each holds at most 16
sessions at once), each opening a session on a camera of an open robbery incident and closing it
again: a brokered session is both calls. Prints JSON: sessions/s and latency min/p50/p95/p99/max (ms).

    python bench/open_session_throughput.py [--callers 100] [--seconds 10]
    python bench/open_session_throughput.py --storage postgres --replicas 1,2 --runs 3

With ``--replicas 1,2`` the runs of each count are interleaved, every replica a ``safetynet
core`` process on one PostgreSQL (a throwaway cluster, fsync on) and one Mosquitto, the callers
spread over them by gRPC round robin; CPU is read per process from /proc (PostgreSQL's: the
postmaster and all its backends), and the ratio of throughputs is reported.
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
import time
from pathlib import Path

import grpc
from media_rig import cpu_seconds, summary

from cloud_core.operators import OperatorStore
from cloud_core.policy import Policy
from cloud_core.storage.database import open_database
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.core_channel import open_core_channel
from runtime.logs import configure_logging
from runtime.signing_keys import load_or_create_signing_key
from safetynet.broker import MosquittoBroker, free_port
from safetynet.postgres_server import ThrowawayPostgres
from simulators.pilot_districts import GANGNAM

OPERATORS = 10
FAKE_OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"

STUB_AGENT = r'''
import asyncio, sys
from runtime.core_channel import open_core_channel
from runtime.logs import configure_logging
from runtime.signing_keys import load_or_create_signing_key
configure_logging("error")
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.mqtt_link import BrokerSettings, MqttLink
from simulators.pilot_districts import GANGNAM

async def main(port):
    link = None
    tasks = set()
    async def on_message(message):
        # Like the real agent: each request is answered in its own task, never one at a time.
        task = asyncio.create_task(answer(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    async def answer(message):
        request = mqtt_pb2.SignalRequest.FromString(message.payload)
        response = mqtt_pb2.SignalResponse(request_id=request.request_id)
        if request.WhichOneof("body") == "offer":
            response.session_id = request.offer.session_id
            response.sdp_answer = "v=0\r\nstub answer\r\n"
        else:
            response.session_id = request.close.session_id
            response.closed = True
        await link.publish(topics.signal_response("gangnam"), response.SerializeToString(), qos=0)
    async def on_connect():
        await link.publish(topics.agent_status("gangnam"), mqtt_pb2.AgentStatus(
            district_id="gangnam", agent_id="stub", state=mqtt_pb2.AGENT_STATE_ONLINE).SerializeToString(), retain=True)
        for c in GANGNAM.cameras:
            status = mqtt_pb2.CameraStatus(state=mqtt_pb2.CAMERA_STATE_ONLINE, camera=mqtt_pb2.CameraDescriptor(
                camera_id=c.camera_id, district_id="gangnam", name=c.name, lat=c.lat, lon=c.lon))
            await link.publish(topics.camera_status("gangnam", c.camera_id), status.SerializeToString(), retain=True)
        print("ready", flush=True)
    link = MqttLink(BrokerSettings(port=port), client_id="stub-agent", on_message=on_message,
                    on_connect=on_connect, subscriptions=[topics.signal_request("gangnam")])
    async with link:
        await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
'''




def _cluster_pids(postmaster: int) -> list[int]:
    """The postmaster and every process whose parent it is (its backends and workers)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):  # a backend that ended meanwhile took its time along
            total += cpu_seconds(pid)
    return total


def _replica_config(folder: Path, name: str, port: int, broker_port: int, dsn: str | None,
                    state: Path) -> Path:
    folder.mkdir()
    storage = f'\n[storage]\nurl = "{dsn}"\n' if dsn else ""
    config = folder / "core.toml"
    config.write_text(f"""
listen = "127.0.0.1:{port}"
database = "{state / 'core.sqlite3'}"
audit_database = "{state / 'audit.sqlite3'}"
client_id = "bench-core-{name}"
grant_key = "{state / 'grant-signing.key'}"
checkpoint_key = "{state / 'audit-checkpoint.key'}"

[broker]
host = "127.0.0.1"
port = {broker_port}
{storage}""")
    return config


async def run(args: argparse.Namespace, postgres: ThrowawayPostgres | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="safetynet-bench-") as tmp:
        state = Path(tmp)
        load_or_create_signing_key(state / "audit-checkpoint.key")
        load_or_create_signing_key(state / "grant-signing.key")
        dsn = postgres.create_database(f"bench_{os.getpid()}_{time.monotonic_ns()}") \
            if postgres is not None else None
        database = open_database(dsn or state / "core.sqlite3")
        # Operators hold at most 16 sessions each ([session_caps]): ten of them, ten callers each.
        tokens = [OperatorStore(database).add(f"police-op-{n}", agency="police-112",
                                              role="operator", policy=Policy.default())[1]
                  for n in range(OPERATORS)]
        database.close()
        async with MosquittoBroker() as broker:
            ports = [free_port() for _ in range(args.replicas)]
            cores = [await asyncio.create_subprocess_exec(
                sys.executable, "-m", "safetynet", "core", "--config",
                str(_replica_config(state / f"replica-{n}", str(n), port, broker.port, dsn, state)),
                "--log-level", "warning") for n, port in enumerate(ports)]
            stub = await asyncio.create_subprocess_exec(
                sys.executable, "-c", STUB_AGENT, str(broker.port), stdout=asyncio.subprocess.PIPE)
            try:
                assert stub.stdout is not None
                await asyncio.wait_for(stub.stdout.readline(), 20)
                metadata = (("authorization", f"Bearer {tokens[0]}"),)
                async with open_core_channel(",".join(f"127.0.0.1:{p}" for p in ports)) as channel:
                    for port in ports:  # every replica up before the load starts
                        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as one:
                            await asyncio.wait_for(one.channel_ready(), 30)
                    incidents = core_pb2_grpc.IncidentServiceStub(channel)
                    cameras = core_pb2_grpc.CameraServiceStub(channel)
                    for _ in range(3 * args.replicas):  # round robin: ask each replica
                        while len((await cameras.ListCameras(core_pb2.ListCamerasRequest(
                                district_id="gangnam", status=mqtt_pb2.CAMERA_STATE_ONLINE),
                                metadata=metadata)).cameras) < 20:
                            await asyncio.sleep(0.1)
                    report = await incidents.Report(core_pb2.ReportIncidentRequest(
                        incident_type="robbery", radius_m=2000,
                        location=core_pb2.GeoPoint(lat=GANGNAM.cameras[0].lat, lon=GANGNAM.cameras[0].lon)),
                        metadata=metadata)
                    in_grant = [c.camera_id for c in report.cameras]
                    sessions = core_pb2_grpc.SessionServiceStub(channel)
                    latencies: list[float] = []
                    failures: dict[str, int] = {}
                    stop_at = 0.0

                    async def caller(index: int) -> None:
                        """Open a session, then close it: a brokered session is both."""
                        n = index
                        mine = (("authorization", f"Bearer {tokens[index % OPERATORS]}"),)
                        while time.perf_counter() < stop_at:
                            request = core_pb2.OpenSessionRequest(
                                camera_id=in_grant[n % len(in_grant)], sdp_offer=FAKE_OFFER,
                                incident_id=report.incident.incident_id)
                            started = time.perf_counter()
                            try:
                                opened = await sessions.OpenSession(request, metadata=mine,
                                                                    timeout=10)
                                latencies.append((time.perf_counter() - started) * 1000)
                                await sessions.CloseSession(core_pb2.CloseSessionRequest(
                                    session_id=opened.session_id), metadata=mine, timeout=10)
                            except grpc.aio.AioRpcError as exc:
                                failures[exc.code().name] = failures.get(exc.code().name, 0) + 1
                            n += args.callers

                    stop_at = time.perf_counter() + args.warmup
                    await asyncio.gather(*(caller(i) for i in range(args.callers)))
                    latencies.clear()
                    groups: dict[str, list[int]] = {
                        **{f"core_{n}": [core.pid] for n, core in enumerate(cores)},
                        "stub_agent": [stub.pid], "broker": [broker.pid or 0],
                        "load_generator": [os.getpid()]}
                    if postgres is not None:
                        groups["postgresql"] = _cluster_pids(postgres.postmaster_pid)
                    cpu_before = {name: _cpu(pids) for name, pids in groups.items()}
                    started = time.perf_counter()
                    stop_at = started + args.seconds
                    await asyncio.gather(*(caller(i) for i in range(args.callers)))
                    elapsed = time.perf_counter() - started
                    if postgres is not None:  # backends come and go: count the newest set
                        groups["postgresql"] = _cluster_pids(postgres.postmaster_pid)
                    cpu = {name: round((_cpu(groups[name]) - before) / elapsed * 100, 1)
                           for name, before in cpu_before.items()}
            finally:
                for process in (stub, *cores):
                    process.terminate()
                    await process.wait()
    done = max(1, len(latencies))
    core_cpu = sum(cpu[f"core_{n}"] for n in range(args.replicas))
    return {
        "sessions": len(latencies),
        "seconds": round(elapsed, 2),
        "sessions_per_second": round(len(latencies) / elapsed, 1),
        "latency_ms": summary(latencies, percentiles=(95, 99), digits=2) if latencies else {},
        "cpu_percent_of_one_core": cpu,
        # CPU a brokered session costs: the figure that carries over to bigger machines.
        "core_cpu_ms_per_session": round(core_cpu * 10 * elapsed / done, 3),
        "database_cpu_ms_per_session": (round(cpu["postgresql"] * 10 * elapsed / done, 3)
                                        if "postgresql" in cpu else None),
        "load_average_1m": os.getloadavg()[0],
        "failures": failures,
    }


async def run_all(args: argparse.Namespace) -> dict[str, object]:
    """Each replica count of ``--replicas`` on the chosen storage, ``--runs`` times, side by
    side in one run; min / p50 / max of each figure, and how throughput grows with replicas."""
    counts = [int(n) for n in args.replicas.split(",")]
    postgres = ThrowawayPostgres(durable=True).__enter__() if args.storage == "postgres" else None
    results: dict[str, list[dict[str, object]]] = {}
    try:
        for _ in range(args.runs):
            for count in counts:  # interleaved: the machine's load falls on every count alike
                one = argparse.Namespace(**{**vars(args), "replicas": count})
                results.setdefault(str(count), []).append(await run(one, postgres))
    finally:
        if postgres is not None:
            postgres.close()

    def figure(runs: list[dict[str, object]], key: str) -> dict[str, float]:
        values = [float(r[key]) for r in runs if r.get(key) is not None]  # type: ignore[arg-type]
        return summary(values, percentiles=(), digits=3) if values else {}

    by_count = {count: {
        "sessions_per_second": figure(runs, "sessions_per_second"),
        "p99_ms": figure([{"p99": r["latency_ms"]["p99"]} for r in runs  # type: ignore[index]
                          if r["latency_ms"]], "p99"),
        "core_cpu_ms_per_session": figure(runs, "core_cpu_ms_per_session"),
        "database_cpu_ms_per_session": figure(runs, "database_cpu_ms_per_session"),
        "runs": runs,
    } for count, runs in results.items()}
    out: dict[str, object] = {
        "benchmark": "open_session_throughput", "storage": args.storage,
        "callers": args.callers, "runs": args.runs, "cpus": os.cpu_count(),
        "target": "core CPU per brokered session <= 1 ms; throughput grows with replicas",
        "replicas": by_count,
    }
    p50s = {count: statistics.median(float(r["sessions_per_second"]) for r in runs)  # type: ignore[arg-type]
            for count, runs in results.items()}
    if p50s.get("1") and len(p50s) > 1:
        out["throughput_ratio_to_1_replica"] = {count: round(p50 / p50s["1"], 2)
                                                for count, p50 in p50s.items()}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--replicas", default="1", help="replica counts to measure, e.g. 1,2")
    parser.add_argument("--storage", choices=("sqlite", "postgres"), default="sqlite",
                        help="postgres: a throwaway cluster of the bench's own (fsync on)")
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    if args.storage == "sqlite" and args.replicas != "1":
        parser.error("several replicas share PostgreSQL: add --storage postgres")
    configure_logging("warning")
    print(json.dumps(asyncio.run(run_all(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
