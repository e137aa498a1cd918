"""The audit log's canonical form: the JSON text a record's hash covers, and how times are written.

A record's ``hash`` is SHA-256 (hex) of its canonical JSON: keys sorted, separators ``,`` and
``:``, ASCII only (``\\uXXXX`` escapes). Times are ISO-8601 UTC with microseconds, fixed width, so
text order is time order. These few functions are the whole recipe, which is why a reviewer can
recompute every hash of an export without this package.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def canonical_json(value: Any) -> str:
    """``value`` as the canonical JSON text that hashes and signatures cover."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def stored_json(value: Any) -> str:
    """JSON as the ``camera_ids`` and ``details`` columns hold it: compact, sorted, readable
    (Hangul stays Hangul). Hashing decodes it and re-encodes canonically."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def record_hash(payload: Mapping[str, Any]) -> str:
    """The hash of a record's canonical payload: SHA-256, hex."""
    return hashlib.sha256(canonical_json(payload).encode("ascii")).hexdigest()


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with microseconds: fixed width, so text order is time order."""
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> datetime:
    """A stored time back as an aware UTC datetime; ValueError if it has no timezone."""
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return value.astimezone(UTC)


def parse_optional_time(text: str | None) -> datetime | None:
    """``parse_time`` for a column that may be null."""
    return None if text is None else parse_time(text)
