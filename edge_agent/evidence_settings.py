"""``[evidence]`` in the agent's config: where clips go, how long, how much disk.

    [evidence]                     # optional: without it the agent keeps no clips
    directory = "evidence"         # beside the config file unless absolute
    key_file = "evidence-signing.key"   # the agent's own Ed25519 key (0600), created if absent
    disk_budget_gib = 20           # hard ceiling: beyond it new clips are refused
    max_clip_seconds = 600
    segment_seconds = 10
    pre_roll_seconds = 30          # kept in memory for cameras being watched; 0 = off
    retention_days = 30            # unless the core's policy sends another; legal hold extends
    purge_interval_seconds = 600
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

GIB = 1 << 30


@dataclass(frozen=True)
class EvidenceSettings:
    """``[evidence]`` in the agent's config; a clip store exists only when this section does."""

    directory: Path
    key_file: Path
    disk_budget_bytes: int = 20 * GIB
    max_clip_seconds: float = 600.0
    segment_seconds: float = 10.0
    pre_roll_seconds: float = 30.0     # kept in memory for cameras being watched; 0 = off
    retention_days: float = 30.0
    purge_interval_seconds: float = 600.0

    @classmethod
    def from_mapping(cls, table: dict[str, Any], base: Path) -> EvidenceSettings:
        known = {f.name for f in fields(cls)} - {"disk_budget_bytes"} | {"disk_budget_gib"}
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"evidence: unknown key(s) {', '.join(sorted(unknown))}")
        numbers: dict[str, float] = {}
        for name in ("disk_budget_gib", "max_clip_seconds", "segment_seconds", "pre_roll_seconds",
                     "retention_days", "purge_interval_seconds"):
            if name in table:
                value = table[name]
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 \
                        or (value == 0 and name != "pre_roll_seconds"):
                    raise ValueError(f"evidence.{name} must be a positive number, got {value!r}")
                numbers[name] = float(value)
        directory = base / str(table.get("directory", "evidence"))
        budget = numbers.pop("disk_budget_gib", 20.0)
        return cls(directory=directory.resolve(),
                   key_file=(base / str(table.get("key_file", "evidence-signing.key"))).resolve(),
                   disk_budget_bytes=int(budget * GIB), **numbers)
