"""The local journal's hash chain, shared by the agent that writes it and the core that takes it in.

An agent serving its district while the core is down (docs/local-mode.md) records every decision
and view as a ``JournalRecord``. Each record's ``hash`` is the SHA-256 of the previous record's
hash, a newline, and the canonical JSON (sorted keys, no spaces, UTF-8) of its other fields, so
an edited, removed, reordered or inserted entry breaks every hash after it. The first record's
previous hash is 64 zeros.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Any, Final

from protos.safetynet.v1 import mqtt_pb2

GENESIS: Final = "0" * 64


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalRecord:
    """One local decision or view, as chained."""

    seq: int
    at: str                  # ISO 8601 UTC, the agent's clock
    district_id: str
    action: str              # local.sign_in | local.view | local.view_end
    operator_id: str
    camera_id: str = ""
    session_id: str = ""
    outcome: str = "ok"      # ok | denied
    reason: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = GENESIS
    hash: str = ""

    def payload(self) -> bytes:
        """What the hash covers besides the previous hash: every field but the two hashes."""
        fields = {"seq": self.seq, "at": self.at, "district_id": self.district_id,
                  "action": self.action, "operator_id": self.operator_id,
                  "camera_id": self.camera_id, "session_id": self.session_id,
                  "outcome": self.outcome, "reason": self.reason, "details": self.details}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()

    def computed_hash(self) -> str:
        return hashlib.sha256(self.prev_hash.encode() + b"\n" + self.payload()).hexdigest()

    def sealed(self) -> JournalRecord:
        """This record with its ``hash`` filled in."""
        return replace(self, hash=self.computed_hash())

    def to_proto(self) -> mqtt_pb2.JournalEntry:
        return mqtt_pb2.JournalEntry(
            seq=self.seq, at=self.at, district_id=self.district_id, action=self.action,
            operator_id=self.operator_id, camera_id=self.camera_id, session_id=self.session_id,
            outcome=self.outcome, reason=self.reason,
            details_json=json.dumps(self.details, sort_keys=True, separators=(",", ":")),
            prev_hash=self.prev_hash, hash=self.hash)

    @classmethod
    def from_proto(cls, entry: mqtt_pb2.JournalEntry) -> JournalRecord:
        """The record ``entry`` carries; ValueError when its details are not a JSON object."""
        try:
            details = json.loads(entry.details_json or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"journal entry {entry.seq}: details are not JSON: {exc}") from exc
        if not isinstance(details, dict):
            raise ValueError(f"journal entry {entry.seq}: details must be a JSON object")
        return cls(seq=entry.seq, at=entry.at, district_id=entry.district_id,
                   action=entry.action, operator_id=entry.operator_id,
                   camera_id=entry.camera_id, session_id=entry.session_id,
                   outcome=entry.outcome, reason=entry.reason, details=details,
                   prev_hash=entry.prev_hash, hash=entry.hash)


def link_problem(record: JournalRecord, after_seq: int, after_hash: str) -> str | None:
    """Why ``record`` cannot follow entry ``after_seq`` whose hash is ``after_hash``; None if it can."""
    if record.seq != after_seq + 1:
        return f"entry {record.seq} does not follow entry {after_seq} (a gap or a replay)"
    if record.prev_hash != after_hash:
        return (f"entry {record.seq} names previous hash {record.prev_hash[:16]}…, but entry "
                f"{after_seq} has {after_hash[:16]}…")
    if record.hash != record.computed_hash():
        return f"entry {record.seq}: its hash does not match its content (edited or forged)"
    return None
