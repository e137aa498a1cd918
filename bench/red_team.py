"""Issue 12's red-team attacks at their original sizes, against a real core, broker, agent and
viewers on loopback, with what each gives now. Prints one JSON document.

    python bench/red_team.py [--slots 16]

- finding 2: one district operator fills the agent's viewer slots (``--slots``, its
  ``max_sessions``) with standing-access sessions and asks for 256; a police incident view of
  the same district then opens (time to answer and to first frame; which session it preempted);
- finding 3: 50 incident reports with a 1 MB ``legal_basis`` (how many stored, bytes the audit
  log grew) and a ``@SUM(…)`` one (how it leaves in the CSV export);
- finding 5: 1,000 wrong tokens over gRPC and over HTTP from one address, and 1,000 in one
  operator's name from 1,000 addresses (outcomes, seconds, ``auth.fail`` records written);
- finding 6: the bad inputs of the report (status and message).

Findings 1, 4 and 7 are repeated by tests (tests/cloud_core/test_audit_witness.py,
tests/attacks/test_red_team.py, tests/faults/, tests/provisioning/test_service_units.py).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cloud_core import audit as audit_log
from cloud_core.audit import export
from cloud_core.config import CoreConfig
from cloud_core.exceptions import SignInThrottled, Unauthenticated
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from edge_agent.config import AgentConfig, CameraConfig
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker
from simulators.pilot_districts import GANGNAM
from viewer.client import CameraViewer, ViewError

SIM = "sim:?size=320x240&fps=15&gop=1&kbps=300"
STATION = core_pb2.GeoPoint(lat=37.49795, lon=127.02760)


def _auth(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def finding_2(core: CoreServer, broker: BrokerSettings, tokens: dict[str, str],
                    slots: int) -> dict[str, Any]:
    config = AgentConfig(
        district_id="gangnam", district_name="Gangnam-gu", agent_id="gangnam-agent",
        broker=broker, webrtc=WebRtcSettings.loopback(), max_sessions=slots,
        cameras=tuple(CameraConfig(c.camera_id, c.name, c.lat, c.lon, SIM)
                      for c in GANGNAM.cameras[:3]),
        grant_public_key=core.config.grant_public_key_path, idle_close_seconds=1.0)
    figures: dict[str, Any] = {"agent_slots": slots, "standing_asked": 256}
    viewers: list[CameraViewer] = []
    refusals: Counter[str] = Counter()
    async with EdgeAgent(config) as agent:
        await core.wait_until(lambda r: len(r.list_cameras(district_id="gangnam",
                                                           status="online")) == 3, 10)
        operators = [tokens["gangnam-op"], *(tokens[f"gangnam-op{n}"] for n in range(1, 16))]
        # gangnam-op asks 17 times, then 15 colleagues of the same centre 239 times in all
        asks = [operators[0]] * 17 + [operators[1 + n % 15] for n in range(239)]
        for n, token in enumerate(asks):
            viewer = CameraViewer(core.address, GANGNAM.cameras[n % 3].camera_id,
                                  webrtc=WebRtcSettings.loopback(), token=token)
            try:
                await viewer.open()
                viewers.append(viewer)
            except ViewError as exc:
                refusals[f"{exc.code}: {exc.message[:70]}"] += 1
        figures["standing_opened"] = len(viewers)
        figures["standing_refused"] = dict(refusals)
        figures["agent_sessions_before"] = len(agent.sessions)
        async with grpc.aio.insecure_channel(core.address) as channel:
            report = await core_pb2_grpc.IncidentServiceStub(channel).Report(
                core_pb2.ReportIncidentRequest(incident_type="robbery", location=STATION,
                                               external_ref="112-bench-preempt"),
                metadata=_auth(tokens["police-op"]))
        police = CameraViewer(core.address, "gangnam-001", webrtc=WebRtcSettings.loopback(),
                              token=tokens["police-op"], incident_id=report.incident.incident_id)
        try:
            await police.open()
            await police.wait_frames(1, timeout=10)
            figures["police_open_session_ms"] = round(police.report.open_session_ms or 0, 1)
            figures["police_first_frame_ms"] = round(police.report.time_to_first_frame_ms or 0, 1)
            for viewer in viewers:  # the preempted one learns why within a few seconds
                if viewer.report.session_id not in agent.sessions:
                    async with asyncio.timeout(5):
                        await viewer.ended.wait()
            reasons = [v.report.ended_reason for v in viewers if v.ended.is_set()]
            preempted = [r for r in reasons if r.startswith("preempted by")]
            figures["standing_preempted"] = len(preempted)
            figures["preempted_reason"] = preempted[0] if preempted else None
            figures["standing_ended_otherwise"] = dict(Counter(
                r for r in reasons if not r.startswith("preempted by")))
        except ViewError as exc:
            figures["police_refused"] = f"{exc.code}: {exc.message}"
        finally:
            for viewer in [*viewers, police]:
                await viewer.close()
    records = audit_log.search(core.config.audit_database, action="session.preempt", limit=10)
    figures["preempt_records"] = len(records)
    return figures


async def finding_3(core: CoreServer, token: str) -> dict[str, Any]:
    database = Path(core.config.audit_database)
    before = sum(p.stat().st_size for p in database.parent.glob(database.name + "*"))
    codes: Counter[str] = Counter()
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.IncidentServiceStub(channel)
        for n in range(50):
            try:
                await stub.Report(core_pb2.ReportIncidentRequest(
                    incident_type="robbery", location=STATION, external_ref=f"bloat-{n}",
                    legal_basis="x" * 1_000_000), metadata=_auth(token))
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
                message = exc.details()
        seconds = time.perf_counter() - started
        await stub.Report(core_pb2.ReportIncidentRequest(
            incident_type="robbery", location=STATION, external_ref="formula",
            legal_basis="@SUM(1+1)*cmd|' /C calc'!A0"), metadata=_auth(token))
    after = sum(p.stat().st_size for p in database.parent.glob(database.name + "*"))
    text = await asyncio.to_thread(export, core.config.audit_database)
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    return {"reports": 50, "outcomes": dict(codes), "message": message,
            "seconds": round(seconds, 2), "audit_bytes_added": after - before,
            "csv_export_ok": bool(text),
            "formula_cell_exported_as": next((c for c in cells if "@SUM" in c), None),
            "cells_starting_with_formula": sum(1 for c in cells if c.startswith(("=", "+", "@")))}


async def finding_5(core: CoreServer, tokens: dict[str, str]) -> dict[str, Any]:
    assert core.access is not None and core.console is not None
    results: dict[str, Any] = {}
    room = "ipv4:10.112.0.5:40000"   # the 112 room's console signed in before the attack
    core.access.authenticate(tokens["police-op"], room)
    codes: Counter[str] = Counter()
    started = time.perf_counter()
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.IncidentServiceStub(channel)
        for n in range(1000):
            try:
                await stub.List(core_pb2.ListIncidentsRequest(), metadata=_auth(f"snt_x{n}"))
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
    results["grpc_1000_one_address"] = {"outcomes": dict(codes),
                                        "seconds": round(time.perf_counter() - started, 2)}
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    async with aiohttp.ClientSession(core.console.url) as http:
        for n in range(1000):
            async with http.get("/api/me", headers={"Authorization": f"Bearer snt_y{n}"}) as r:
                statuses[r.status] += 1
    results["http_1000_one_address"] = {"statuses": dict(statuses),
                                        "seconds": round(time.perf_counter() - started, 2)}
    outcomes: Counter[str] = Counter()
    for n in range(1000):
        try:
            core.access.authenticate(f"snt_police-op.guess{n}",
                                     f"ipv4:198.51.{n // 250}.{n % 250}:40000")
        except Unauthenticated:
            outcomes["UNAUTHENTICATED"] += 1
        except SignInThrottled:
            outcomes["RESOURCE_EXHAUSTED"] += 1
    try:
        core.access.authenticate(tokens["police-op"], "ipv4:203.0.113.9:40000")
        fresh = "signed in"
    except SignInThrottled as exc:
        fresh = f"RESOURCE_EXHAUSTED: {exc.reason}"
    signed_in = core.access.authenticate(tokens["police-op"], room)
    await core.access.sweep()
    assert core.audit is not None
    records = await core.audit.search(action="auth.fail")
    results["police_op_from_1000_addresses"] = {
        "outcomes": dict(outcomes), "right_token_from_a_new_address": fresh,
        "right_token_from_the_room": f"signed in as {signed_in.operator.operator_id}"}
    results["auth_fail_records"] = len(records)
    async with aiohttp.ClientSession(core.console.url) as http, http.get("/metrics") as r:
        results["metrics"] = [line for line in (await r.text()).splitlines()
                              if line.startswith("safetynet_core_sign_in_")]
    return results


async def finding_6(core: CoreServer, token: str) -> dict[str, Any]:
    assert core.console is not None
    results: dict[str, Any] = {}
    old = core_pb2.ReportIncidentRequest(incident_type="robbery", location=STATION)
    old.occurred_at.FromDatetime(datetime(1970, 1, 1, tzinfo=UTC))
    stamp = core_pb2.ReportIncidentRequest(incident_type="robbery", location=STATION)
    stamp.occurred_at.seconds = 10**15
    async with grpc.aio.insecure_channel(core.address) as channel:
        incidents = core_pb2_grpc.IncidentServiceStub(channel)
        sessions = core_pb2_grpc.SessionServiceStub(channel)
        for name, call, request in (
                ("empty camera id", sessions.OpenSession,
                 core_pb2.OpenSessionRequest(
                     camera_id="", sdp_offer="v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n")),
                ("out-of-range Timestamp", incidents.Report, stamp),
                ("occurred_at in 1970", incidents.Report, old),
                ("10,000-char external_ref", incidents.Report, core_pb2.ReportIncidentRequest(
                    incident_type="robbery", location=STATION, external_ref="r" * 10_000))):
            try:
                await call(request, metadata=_auth(token))
                results[name] = "accepted"
            except grpc.aio.AioRpcError as exc:
                results[name] = f"{exc.code().name}: {(exc.details() or '')[:90]}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(core.console.url) as http:
        for name, body in (
                ("5,000-digit number", '{"incident_type": "robbery", "lat": ' + "9" * 5000
                 + ', "lon": 127}'),
                ("100,000-deep JSON", "[" * 100_000 + "]" * 100_000)):
            async with http.post("/api/incidents", data=body, headers=headers) as response:
                payload = await response.json()
                results[name] = f"HTTP {response.status} {payload.get('error')}"
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"benchmark": "red_team", "load_average_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="safetynet-red-team-") as folder:
        async with MosquittoBroker() as mosquitto:
            broker = BrokerSettings(host=mosquitto.host, port=mosquitto.port, keepalive=5)
            config = CoreConfig(database=Path(folder) / "core.sqlite3", listen="127.0.0.1:0",
                                http_listen="127.0.0.1:0", broker=broker,
                                answer_timeout_seconds=5.0)
            async with CoreServer(replace(config)) as core:
                await core.wait_connected()
                assert core.access is not None
                add = core.access.operators.add
                policy = core.access.policy
                tokens = {name: add(name, agency=agency, role="operator", policy=policy)[1]
                          for name, agency in (("police-op", "police-112"),
                                               ("gangnam-op", "district:gangnam"),
                                               *((f"gangnam-op{n}", "district:gangnam")
                                                 for n in range(1, 16)))}
                results["finding_2"] = await finding_2(core, broker, tokens, args.slots)
                results["finding_3"] = await finding_3(core, tokens["police-op"])
                results["finding_6"] = await finding_6(core, tokens["police-op"])
                results["finding_5"] = await finding_5(core, tokens)
    results["load_average_after"] = list(os.getloadavg())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=16,
                        help="the agent's viewer slots (max_sessions) to fill (default 16)")
    configure_logging("warning")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
