"""The agent as a witness of the city's audit log: it keeps every chain head the core publishes.

The core publishes each signed checkpoint of its audit log on the district's
``audit/checkpoint`` topic (retained). The agent appends each one whose ``seq`` moves forward to
an append-only file (``[audit] witness_file``, 0600), which it never rewrites. An auditor who
doubts the core's host runs ``safetynet audit verify --witness <that file>``: a log rewritten,
truncated or re-signed since no longer matches the heads held here. The agent does not verify the
signature (it may not hold the checkpoint key); the verifier does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import structlog
from google.protobuf.message import DecodeError

from protos.safetynet.v1 import mqtt_pb2
from runtime.checkpoint_witness import WitnessedCheckpoint, WitnessFile, WitnessFileError

log = structlog.get_logger(__name__)

MAX_PAYLOAD_BYTES = 1024


class CheckpointWitness:
    """Keeps the checkpoints that arrive over MQTT in the agent's witness file."""

    def __init__(self, path: Path) -> None:
        self._file = WitnessFile(path)
        self._lock = asyncio.Lock()
        self.kept = 0

    @property
    def path(self) -> Path:
        return self._file.path

    async def handle(self, payload: bytes) -> bool:
        """Keep the checkpoint in ``payload`` if it is well formed and new; True if kept."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            log.warning("rejected audit checkpoint: too large", size=len(payload))
            return False
        try:
            message = mqtt_pb2.AuditCheckpoint.FromString(payload)
            checkpoint = WitnessedCheckpoint(
                seq=message.seq, head_hash=message.head_hash, at=message.at,
                key_id=message.key_id, signature=message.signature)
        except (DecodeError, WitnessFileError) as exc:
            log.warning("rejected malformed audit checkpoint", error=str(exc))
            return False
        async with self._lock:
            try:
                kept = await asyncio.to_thread(self._file.append, checkpoint)
            except (OSError, WitnessFileError) as exc:
                log.error("audit witness file failed", path=str(self.path), error=str(exc))
                return False
        if kept:
            self.kept += 1
        return kept
