"""Authorized OpenSession decisions per second through the real core.

The core runs as its own process (``safetynet core``) against a Mosquitto of its own; a stub agent
(another process) answers every offer at once, so what is measured is the core's path:
authentication, policy decision, grant signing, audit writes (durable, group-committed), the MQTT
relay to the agent and back, and the session record. The load comes from this process: N
concurrent gRPC callers, each an operator of police-112 viewing cameras of an open robbery
incident. Prints JSON: sessions/s and latency min/p50/p95/p99/max (ms).

    python bench/open_session_throughput.py [--callers 100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
from media_rig import cpu_seconds, summary

from cloud_core.operators import OperatorStore
from cloud_core.policy import Policy
from cloud_core.registry import Registry
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.logs import configure_logging
from safetynet.broker import MosquittoBroker, free_port
from simulators.pilot_districts import GANGNAM

FAKE_OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"

STUB_AGENT = r'''
import asyncio, sys
from runtime.logs import configure_logging
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




async def run(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="safetynet-bench-") as tmp:
        state = Path(tmp)
        db = state / "core.sqlite3"
        registry = Registry(db)
        _, token = OperatorStore(registry.db).add("police-op", agency="police-112", role="operator",
                                                  policy=Policy.default())
        registry.close()
        async with MosquittoBroker() as broker:
            port = free_port()
            core = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "safetynet", "core", "--db", str(db), "--listen",
                f"127.0.0.1:{port}", "--broker", f"127.0.0.1:{broker.port}", "--log-level", "warning")
            stub = await asyncio.create_subprocess_exec(
                sys.executable, "-c", STUB_AGENT, str(broker.port), stdout=asyncio.subprocess.PIPE)
            try:
                assert stub.stdout is not None
                await asyncio.wait_for(stub.stdout.readline(), 20)
                metadata = (("authorization", f"Bearer {token}"),)
                async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                    await asyncio.wait_for(channel.channel_ready(), 20)
                    incidents = core_pb2_grpc.IncidentServiceStub(channel)
                    cameras = core_pb2_grpc.CameraServiceStub(channel)
                    while len((await cameras.ListCameras(core_pb2.ListCamerasRequest(
                            district_id="gangnam", status=mqtt_pb2.CAMERA_STATE_ONLINE), metadata=metadata)).cameras) < 20:
                        await asyncio.sleep(0.1)
                    report = await incidents.Report(core_pb2.ReportIncidentRequest(
                        incident_type="robbery", radius_m=5000,
                        location=core_pb2.GeoPoint(lat=GANGNAM.cameras[0].lat, lon=GANGNAM.cameras[0].lon)),
                        metadata=metadata)
                    in_grant = [c.camera_id for c in report.cameras]
                    sessions = core_pb2_grpc.SessionServiceStub(channel)
                    latencies: list[float] = []
                    failures: dict[str, int] = {}
                    stop_at = 0.0

                    async def caller(index: int) -> None:
                        n = index
                        while time.perf_counter() < stop_at:
                            request = core_pb2.OpenSessionRequest(
                                camera_id=in_grant[n % len(in_grant)], sdp_offer=FAKE_OFFER,
                                incident_id=report.incident.incident_id)
                            started = time.perf_counter()
                            try:
                                await sessions.OpenSession(request, metadata=metadata, timeout=10)
                            except grpc.aio.AioRpcError as exc:
                                failures[exc.code().name] = failures.get(exc.code().name, 0) + 1
                            else:
                                latencies.append((time.perf_counter() - started) * 1000)
                            n += args.callers

                    stop_at = time.perf_counter() + args.warmup
                    await asyncio.gather(*(caller(i) for i in range(args.callers)))
                    latencies.clear()
                    pids: dict[str, int | None] = {"core": core.pid, "stub_agent": stub.pid, "broker": broker.pid,
                            "load_generator": os.getpid()}
                    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
                    started = time.perf_counter()
                    stop_at = started + args.seconds
                    await asyncio.gather(*(caller(i) for i in range(args.callers)))
                    elapsed = time.perf_counter() - started
                    cpu = {name: round((cpu_seconds(pids[name] or 0) - before) / elapsed * 100, 1)
                           for name, before in cpu_before.items()}
            finally:
                for process in (stub, core):
                    process.terminate()
                    await process.wait()
    return {
        "benchmark": "open_session_throughput",
        "callers": args.callers,
        "seconds": round(elapsed, 2),
        "sessions": len(latencies),
        "sessions_per_second": round(len(latencies) / elapsed, 1),
        "latency_ms": summary(latencies, percentiles=(95, 99), digits=2),
        "cpu_percent_of_one_core": cpu,
        "core_cpu_ms_per_session": round(cpu["core"] * 10 * elapsed / max(1, len(latencies)), 3),
        "load_average_1m": os.getloadavg()[0],
        "failures": failures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--callers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
