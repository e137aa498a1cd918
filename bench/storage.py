"""The audit chain on SQLite and on PostgreSQL, and leadership takeover by advisory lock.

    python bench/storage.py [--runs 3] [--seconds 2] [--appenders 50] [--takeovers 5]

Prints one JSON object: durable audit appends/s (group commit, ``--appenders`` concurrent
callers per writer) on SQLite (1 writer), PostgreSQL with 1 writer and with 2 writer processes
on the one chain; and the time from SIGKILL of the leader to a follower holding the lock. Each
figure as min/p50/max over the runs, with the load average before and after. PostgreSQL is a
throwaway cluster on a free loopback port with fsync on (as SQLite's synchronous=FULL).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog

from cloud_core.audit import AuditAction, AuditEntry, AuditLog, verify
from cloud_core.storage.leader import AdvisoryLockLeader
from safetynet.postgres_server import ThrowawayPostgres

HERE = Path(__file__).resolve()


def spread(values: list[float], digits: int = 1) -> dict[str, float]:
    return {"min": round(min(values), digits), "p50": round(statistics.median(values), digits),
            "max": round(max(values), digits), "runs": len(values)}


async def append_for(location: Path | str, seconds: float, appenders: int, name: str) -> int:
    """Append from ``appenders`` callers for ``seconds``; return how many were durable."""
    count = 0

    async def one(log: AuditLog, worker: int, deadline: float) -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await log.append(AuditEntry(
                action=AuditAction.SESSION_OPEN, operator_id=f"{name}-{worker}",
                camera_ids=(f"cam-{count % 50}",), incident_id="inc-bench",
                details={"writer": name}))
            count += 1

    async with AuditLog.open(location) as log:
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)  # every writer starts at once
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(one(log, w, deadline) for w in range(appenders)))
    return count


def appends_per_s(location: Path | str, seconds: float, appenders: int, writers: int) -> float:
    """Appends/s of ``writers`` processes writing the one chain at once (connected first)."""
    argv = [sys.executable, str(HERE), "--child-append", str(location), str(seconds),
            str(appenders)]
    children = [subprocess.Popen([*argv, f"w{i}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True) for i in range(writers)]
    for child in children:
        assert child.stdout is not None
        if child.stdout.readline() != "ready\n":
            raise RuntimeError("a writer did not start")
    total = 0
    for child in children:
        out, _ = child.communicate("go\n", timeout=seconds + 60)
        if child.returncode != 0:
            raise RuntimeError(f"writer failed ({child.returncode})")
        total += int(out.split()[-1])
    return total / seconds


def takeover_s(dsn: str) -> float:
    """Seconds from SIGKILL of the leader to the follower's ``leader`` line."""
    argv = [sys.executable, str(HERE), "--child-lead", dsn]
    leader = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert leader.stdout is not None
    first = leader.stdout.readline()
    follower = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert follower.stdout is not None
        if first != "leader\n" or follower.stdout.readline() != "follower\n":
            raise RuntimeError("the two contenders did not start as leader and follower")
        killed = time.perf_counter()
        leader.send_signal(signal.SIGKILL)
        if follower.stdout.readline() != "leader\n":
            raise RuntimeError("the follower never took over")
        return time.perf_counter() - killed
    finally:
        for child in (leader, follower):
            child.kill()
            child.wait()


async def child_lead(dsn: str) -> None:
    async with AdvisoryLockLeader(dsn, retry_interval=0.2) as leadership:
        print("leader" if leadership.is_leader else "follower", flush=True)
        if not leadership.is_leader:
            await leadership.wait_leader()
            print("leader", flush=True)
        await asyncio.Event().wait()


def run(args: argparse.Namespace) -> dict[str, object]:
    result: dict[str, object] = {"load_before": [round(x, 2) for x in os.getloadavg()],
                                 "appenders_per_writer": args.appenders,
                                 "seconds_per_run": args.seconds}
    with tempfile.TemporaryDirectory() as folder, ThrowawayPostgres(durable=True) as pg:
        sqlite_runs, pg1_runs, pg2_runs, takeovers = [], [], [], []
        for run_no in range(args.runs):
            db = Path(folder) / f"run{run_no}.sqlite3"
            sqlite_runs.append(appends_per_s(db, args.seconds, args.appenders, 1))
            dsn = pg.create_database(f"one_{run_no}")
            pg1_runs.append(appends_per_s(dsn, args.seconds, args.appenders, 1))
            dsn2 = pg.create_database(f"two_{run_no}")
            pg2_runs.append(appends_per_s(dsn2, args.seconds, args.appenders, 2))
            if not verify(dsn2).ok:
                raise RuntimeError("the two-writer chain does not verify")
        dsn = pg.create_database("leadership")
        takeovers = [takeover_s(dsn) for _ in range(args.takeovers)]
    result["audit_appends_per_s"] = {"sqlite_1_writer": spread(sqlite_runs, 0),
                                     "postgres_1_writer": spread(pg1_runs, 0),
                                     "postgres_2_writers": spread(pg2_runs, 0)}
    result["two_writer_chain_verified"] = True
    result["leader_takeover_s"] = spread(takeovers, 3)
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> None:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    if sys.argv[1:2] == ["--child-append"]:
        location, seconds, appenders, name = sys.argv[2:6]
        count = asyncio.run(append_for(location if "://" in location else Path(location),
                                       float(seconds), int(appenders), name))
        print(count, flush=True)
        return
    if sys.argv[1:2] == ["--child-lead"]:
        asyncio.run(child_lead(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--appenders", type=int, default=50)
    parser.add_argument("--takeovers", type=int, default=5)
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
