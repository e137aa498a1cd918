"""Child process for the storage tests and bench: a second core replica's share of the work.

    python storage_child.py append DSN COUNT NAME   # append COUNT records, print "done SEQ…"
    python storage_child.py lead DSN                # print "follower"/"leader" on each change

``append`` runs 4 concurrent appenders (group commits in flight); ``lead`` runs until killed.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import structlog

from cloud_core.audit import AuditAction, AuditEntry, AuditLog, AuditLogConfig
from cloud_core.storage.leader import AdvisoryLockLeader


async def append(dsn: str, count: int, name: str) -> None:
    async with AuditLog.open(dsn, config=AuditLogConfig(checkpoint_every=50)) as log:
        async def one(n: int) -> int:
            record = await log.append(AuditEntry(
                action=AuditAction.SESSION_OPEN, operator_id=name, camera_ids=(f"cam-{n % 7}",),
                details={"writer": name, "n": n}))
            return record.seq

        sys.stdout.write("ready\n")
        sys.stdout.flush()
        sys.stdin.readline()  # the parent starts both writers at once
        seqs: list[int] = []
        for start in range(0, count, 4):
            seqs += await asyncio.gather(*(one(n) for n in range(start, min(start + 4, count))))
    sys.stdout.write(f"done {' '.join(map(str, seqs))}\n")
    sys.stdout.flush()


async def lead(dsn: str) -> None:
    async with AdvisoryLockLeader(dsn, retry_interval=0.2) as leader:
        was: bool | None = None
        while True:
            if leader.is_leader != was:
                was = leader.is_leader
                sys.stdout.write("leader\n" if was else "follower\n")
                sys.stdout.flush()
            await asyncio.sleep(0.02)


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    if sys.argv[1] == "append":
        asyncio.run(append(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(lead(sys.argv[2]))
