"""Audit append throughput and latency with many concurrent appenders (group commit).

    python bench/audit_append.py [--appenders 100] [--seconds 3] [--max-batch 1000] [--dir DIR]

Prints one JSON object: appends/s and per-append latency (min/p50/p95/p99/max, ms) from the
call of ``append`` to its durable return. ``--max-batch 1`` shows a commit per record.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import structlog

from cloud_core.audit import (
    AuditAction,
    AuditEntry,
    AuditLog,
    AuditLogConfig,
    CheckpointSigner,
    verify,
)


async def appender(log: AuditLog, worker: int, deadline: float, latencies: list[float]) -> None:
    n = 0
    while time.perf_counter() < deadline:
        entry = AuditEntry(
            action=AuditAction.SESSION_OPEN,
            operator_id=f"op-{worker}",
            agency="seoul-119",
            source_address="10.1.2.3",
            camera_ids=(f"cam-{n % 50}",),
            incident_id=f"inc-{worker % 10}",
            purpose="fire suppression",
            legal_basis="PIPA art. 18(2)",
            reason="incident in radius",
            details={"session": f"s-{worker}-{n}"},
        )
        started = time.perf_counter()
        await log.append(entry)
        latencies.append(time.perf_counter() - started)
        n += 1


async def run(db: Path, appenders: int, seconds: float, max_batch: int) -> dict[str, object]:
    signer = CheckpointSigner.generate()
    latencies: list[float] = []
    config = AuditLogConfig(max_batch=max_batch)
    async with AuditLog.open(db, signer=signer, config=config) as log:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(appender(log, w, deadline, latencies) for w in range(appenders)))
        elapsed = time.perf_counter() - started
    verified = time.perf_counter()
    report = verify(db, signer.public_key)
    verify_s = time.perf_counter() - verified
    ms = sorted(x * 1000 for x in latencies)
    quantiles = statistics.quantiles(ms, n=100)
    return {
        "appenders": appenders,
        "max_batch": max_batch,
        "seconds": round(elapsed, 2),
        "appends": len(ms),
        "appends_per_s": round(len(ms) / elapsed),
        "latency_ms": {
            "min": round(ms[0], 2),
            "p50": round(quantiles[49], 2),
            "p95": round(quantiles[94], 2),
            "p99": round(quantiles[98], 2),
            "max": round(ms[-1], 2),
        },
        "verify_ok": report.ok,
        "verify_s": round(verify_s, 2),
        "db_bytes": db.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appenders", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--max-batch", type=int, default=1000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database")
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        result = asyncio.run(
            run(Path(directory) / "bench.sqlite3", args.appenders, args.seconds, args.max_batch)
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
