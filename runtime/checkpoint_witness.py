"""A witness's copy of the audit log's signed checkpoints: an append-only file of JSON lines.

The core signs a checkpoint (record ``seq`` had hash ``head_hash``) every few seconds and on start
and stop, and publishes each one to its witnesses: every district agent (MQTT) and the city
auditor's file. A witness keeps what it was sent and never rewrites it, so a log rewritten,
truncated or re-signed on the core's host no longer matches the heads the witnesses hold
(``safetynet audit verify --witness FILE``).

One line per checkpoint, the checkpoint's own fields plus when the witness got it::

    {"at": "...", "head_hash": "...", "key_id": "...", "seq": 42, "signature": "...",
     "witnessed_at": "..."}

The file is created 0600 and opened ``O_APPEND``; each line is written with one ``write`` and
fsync-ed. A witness keeps only heads that move forward (a lower or equal ``seq`` is not stored):
the file grows by one line per checkpoint the core signs, not per message.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

_HEX64: Final = re.compile(r"^[0-9a-f]{64}$")
_HEX: Final = re.compile(r"^[0-9a-f]{1,256}$")
MAX_LINE_BYTES: Final = 4096


class WitnessFileError(ValueError):
    """A witness file (or one line of it) is not what a witness writes."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessedCheckpoint:
    """One checkpoint as a witness holds it; ``at`` is the core's signing time (ISO text)."""

    seq: int
    head_hash: str
    at: str
    key_id: str
    signature: str
    witnessed_at: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or self.seq < 1:
            raise WitnessFileError(f"seq must be a positive integer, got {self.seq!r}")
        if not isinstance(self.head_hash, str) or not _HEX64.fullmatch(self.head_hash):
            raise WitnessFileError("head_hash must be 64 lowercase hex digits")
        if not isinstance(self.signature, str) or not _HEX.fullmatch(self.signature):
            raise WitnessFileError("signature must be lowercase hex")
        for name in ("at", "key_id", "witnessed_at"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > 64:
                raise WitnessFileError(f"{name} must be text of at most 64 characters")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> WitnessedCheckpoint:
        try:
            return cls(seq=data["seq"], head_hash=data["head_hash"], at=data["at"],
                       key_id=data["key_id"], signature=data["signature"],
                       witnessed_at=data.get("witnessed_at", ""))
        except KeyError as exc:
            raise WitnessFileError(f"missing field {exc.args[0]!r}") from None

    def to_line(self) -> bytes:
        return (json.dumps({"seq": self.seq, "head_hash": self.head_hash, "at": self.at,
                            "key_id": self.key_id, "signature": self.signature,
                            "witnessed_at": self.witnessed_at},
                           sort_keys=True, separators=(",", ":")) + "\n").encode("ascii")


class WitnessFile:
    """The append-only file one witness keeps. Not thread-safe: one writer per file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._last_seq: int | None = None

    def last_seq(self) -> int:
        """The highest seq held (0 for a new file); read from the file once, then remembered."""
        if self._last_seq is None:
            self._last_seq = max((c.seq for c in self.read()), default=0)
        return self._last_seq

    def append(self, checkpoint: WitnessedCheckpoint) -> bool:
        """Keep ``checkpoint`` if it moves the head forward; True when it was written."""
        if checkpoint.seq <= self.last_seq():
            return False
        if not checkpoint.witnessed_at:
            checkpoint = WitnessedCheckpoint(
                seq=checkpoint.seq, head_hash=checkpoint.head_hash, at=checkpoint.at,
                key_id=checkpoint.key_id, signature=checkpoint.signature,
                witnessed_at=datetime.now(UTC).isoformat(timespec="microseconds"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, checkpoint.to_line())
            os.fsync(fd)
        finally:
            os.close(fd)
        self._last_seq = checkpoint.seq
        return True

    def read(self) -> list[WitnessedCheckpoint]:
        """Every checkpoint held, in file order; WitnessFileError naming a bad line."""
        return list(self._lines())

    def _lines(self) -> Iterator[WitnessedCheckpoint]:
        if not self.path.exists():
            return
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip() or not raw.endswith(b"\n"):
                    continue  # blank, or a line torn by a crash mid-write
                if len(raw) > MAX_LINE_BYTES:
                    raise WitnessFileError(f"{self.path}:{number}: line too long")
                try:
                    data = json.loads(raw)
                    if not isinstance(data, dict):
                        raise WitnessFileError("not a JSON object")
                    yield WitnessedCheckpoint.from_mapping(data)
                except (ValueError, WitnessFileError) as exc:
                    raise WitnessFileError(f"{self.path}:{number}: {exc}") from None
