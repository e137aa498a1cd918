"""Sending the audit log's checkpoints to witnesses off the core's host.

Each signed checkpoint goes to every witness file the core is configured with (the city
auditor's append-only copy, written at once, before the writer moves on) and, over MQTT, to every
district's agent, which keeps it in its own append-only file (``edge_agent.checkpoint_witness``).
Only the newest checkpoint matters to a witness, so the MQTT side keeps just that one: a
checkpoint superseded before the link could send it is skipped, never queued without bound.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import structlog

from cloud_core.audit.canonical import iso
from cloud_core.audit.checkpoints import Checkpoint
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from runtime.checkpoint_witness import WitnessedCheckpoint, WitnessFile
from runtime.exceptions import LinkDown
from runtime.mqtt_link import MqttLink

log = structlog.get_logger(__name__)


def witnessed(checkpoint: Checkpoint) -> WitnessedCheckpoint:
    """``checkpoint`` in a witness file's form."""
    return WitnessedCheckpoint(seq=checkpoint.seq, head_hash=checkpoint.head_hash,
                               at=iso(checkpoint.at) or "", key_id=checkpoint.key_id,
                               signature=checkpoint.signature)


def checkpoint_message(checkpoint: Checkpoint) -> bytes:
    """The ``AuditCheckpoint`` payload published to agents."""
    return mqtt_pb2.AuditCheckpoint(
        seq=checkpoint.seq, head_hash=checkpoint.head_hash, at=iso(checkpoint.at) or "",
        key_id=checkpoint.key_id, signature=checkpoint.signature).SerializeToString()


class CheckpointWitnesses:
    """The core's witnesses: ``offer`` is ``AuditLog``'s ``on_checkpoint``; ``run`` publishes."""

    def __init__(self, files: Sequence[Path], districts: Callable[[], Iterable[str]]) -> None:
        self._files = [WitnessFile(path) for path in files]
        self._districts = districts
        self._latest: Checkpoint | None = None
        self._sent_seq = 0
        self._wake = asyncio.Event()
        self._link: MqttLink | None = None
        self.published = 0

    def attach(self, link: MqttLink | None) -> None:
        self._link = link
        if link is not None:
            self._wake.set()

    async def link_up(self) -> None:
        """The link (re)connected: send the newest checkpoint again (``MqttLink.on_connect``)."""
        self._sent_seq = 0
        self._wake.set()

    def offer(self, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` in every witness file now, and queue it for the agents."""
        for witness in self._files:
            try:
                witness.append(witnessed(checkpoint))
            except OSError as exc:
                log.error("audit_witness_file_failed", path=str(witness.path), error=str(exc))
        if self._latest is None or checkpoint.seq >= self._latest.seq:
            self._latest = checkpoint
            self._wake.set()

    async def run(self) -> None:
        """Publish the newest checkpoint whenever it changes or the link comes back."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.publish_latest()

    async def publish_latest(self) -> None:
        """Publish the newest checkpoint to every district once; a failure waits for the link."""
        checkpoint, link = self._latest, self._link
        if checkpoint is None or link is None or checkpoint.seq <= self._sent_seq:
            return
        payload = checkpoint_message(checkpoint)
        try:
            for district in sorted(set(self._districts())):
                await link.send(topics.route(topics.Kind.AUDIT_CHECKPOINT, district), payload)
        except LinkDown as exc:
            log.warning("audit_checkpoint_not_published", seq=checkpoint.seq, error=str(exc))
            return
        self._sent_seq = checkpoint.seq
        self.published += 1
