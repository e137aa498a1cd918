"""A real core process, SIGKILLed while it writes the audit log: the chain still verifies and
every record whose call had returned is there."""

from __future__ import annotations

import asyncio
import itertools
import signal
import sys
from pathlib import Path

import grpc

from cloud_core import audit as audit_log
from cloud_core.operators import OperatorStore
from cloud_core.policy import Policy
from cloud_core.registry import Registry
from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from safetynet.broker import MosquittoBroker, free_port
from safetynet.cli import main


async def test_sigkilled_core_leaves_a_verifiable_chain_with_nothing_committed_lost(
        mosquitto: MosquittoBroker, tmp_path: Path) -> None:
    db = tmp_path / "core.sqlite3"
    registry = Registry(db)
    _, token = OperatorStore(registry.db).add("police-op", agency="police-112", role="operator",
                                              policy=Policy.default())
    registry.close()
    port = free_port()
    core = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", "core", "--db", str(db), "--listen", f"127.0.0.1:{port}",
        "--broker", f"127.0.0.1:{mosquitto.port}", "--log-level", "warning")
    acknowledged: list[str] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 20)
            stub = core_pb2_grpc.IncidentServiceStub(channel)
            metadata = (("authorization", f"Bearer {token}"),)

            async def reporter(n: int) -> None:
                for i in itertools.count():  # one case number per report: reports are idempotent
                    try:
                        report = await stub.Report(core_pb2.ReportIncidentRequest(
                            incident_type="robbery", external_ref=f"crash-{n}-{i}",
                            location=core_pb2.GeoPoint(lat=37.4979, lon=127.0276)),
                            metadata=metadata, timeout=5)
                    except grpc.aio.AioRpcError:
                        return
                    acknowledged.append(report.incident.incident_id)

            workers = [asyncio.create_task(reporter(n)) for n in range(8)]
            while len(acknowledged) < 150:
                await asyncio.sleep(0.01)
            core.send_signal(signal.SIGKILL)
            await core.wait()
            await asyncio.gather(*workers)
    finally:
        if core.returncode is None:
            core.kill()
            await core.wait()

    audit_db = tmp_path / "audit.sqlite3"
    assert main(["audit", "verify", "--db", str(audit_db)]) == 0
    report = audit_log.verify(audit_db)
    assert report.ok and report.records >= len(acknowledged)
    recorded = {r.entry.incident_id for r in audit_log.search(audit_db, action="incident.report",
                                                              limit=1000)}
    missing = set(acknowledged) - recorded
    assert not missing, f"{len(missing)} acknowledged incidents missing from the audit log"
