"""Child process for the audit crash test: append until killed, report each durable seq.

    python audit_writer_child.py DB_PATH PRIVATE_KEY_HEX

Several tasks append concurrently (so group commits are in flight when the parent kills us);
each prints the seq of its record on stdout, flushed, only after ``append`` returned.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_core.audit import AuditAction, AuditEntry, AuditLog, AuditLogConfig, CheckpointSigner

APPENDERS = 8


async def append_forever(log: AuditLog, worker: int) -> None:
    for n in range(sys.maxsize):
        entry = AuditEntry(
            action=AuditAction.SESSION_OPEN,
            operator_id=f"op-{worker}",
            agency="119",
            camera_ids=(f"cam-{n % 7}",),
            incident_id="inc-crash",
            details={"worker": worker, "n": n},
        )
        record = await log.append(entry)
        sys.stdout.write(f"{record.seq}\n")
        sys.stdout.flush()


async def main(db_path: Path, signer: CheckpointSigner) -> None:
    config = AuditLogConfig(checkpoint_every=50)
    async with AuditLog.open(db_path, signer=signer, config=config) as log:
        async with asyncio.TaskGroup() as tasks:
            for worker in range(APPENDERS):
                tasks.create_task(append_forever(log, worker))


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[2]))
    asyncio.run(main(Path(sys.argv[1]), CheckpointSigner(key)))
