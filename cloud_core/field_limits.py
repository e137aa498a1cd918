"""What a caller may put in a text field: its length and its characters, checked at the door.

Every request reaches the access layer through ``AccessService``, from gRPC, the console's HTTP
API and the CLI alike, so the façade checks each field here before anything is decided, stored
or written to the audit log. A field over its limit, or holding characters outside its set, is an
``InvalidRequest`` that names the field, the limit and the set; nothing is truncated silently.
Times a caller supplies must lie in a sane window around now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from cloud_core.exceptions import InvalidRequest


@dataclass(frozen=True, slots=True)
class TextLimit:
    """At most ``max_chars`` characters, each matching ``allowed`` (described as ``charset``)."""

    max_chars: int
    allowed: re.Pattern[str]
    charset: str


ID: Final = TextLimit(128, re.compile(r"[A-Za-z0-9._:-]*"),
                      "letters, digits, '.', '_', ':' and '-'")
NAME: Final = TextLimit(64, re.compile(r"[a-z0-9._-]*"),
                        "lowercase letters, digits, '.', '_' and '-'")
REFERENCE: Final = TextLimit(128, re.compile(r"[A-Za-z0-9._:/#-]*"),
                             "letters, digits and . _ : / # -")
#: Free text (a legal basis, a reason): printable characters, any script, no control characters.
PROSE: Final = TextLimit(1000, re.compile(r"[^\x00-\x1f\x7f-\x9f\u2028\u2029]*"),
                         "printable text without control characters or line breaks")

#: An incident's occurred_at: not before this long ago, not after this far ahead (clock skew).
OCCURRED_NOT_BEFORE: Final = timedelta(days=7)
OCCURRED_NOT_AFTER: Final = timedelta(minutes=5)


def check_text(field: str, value: str, limit: TextLimit) -> str:
    """``value`` if it fits ``limit``; InvalidRequest naming the field otherwise."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field} must be text")
    if len(value) > limit.max_chars:
        raise InvalidRequest(
            f"{field} is {len(value)} characters long; at most {limit.max_chars} are allowed")
    if not limit.allowed.fullmatch(value):
        raise InvalidRequest(f"{field} may contain only {limit.charset}")
    return value


def check_optional(field: str, value: str | None, limit: TextLimit) -> str | None:
    """``check_text`` for a field that may be absent."""
    return None if value is None else check_text(field, value, limit)


def check_occurred_at(value: datetime | None, now: datetime) -> datetime | None:
    """An incident time a caller gave, if it lies within [now - 7 days, now + 5 minutes]."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise InvalidRequest("occurred_at must carry a time zone")
    if not now - OCCURRED_NOT_BEFORE <= value <= now + OCCURRED_NOT_AFTER:
        raise InvalidRequest(
            f"occurred_at {value.isoformat()} is outside the accepted window (the last "
            f"{OCCURRED_NOT_BEFORE.days} days up to {OCCURRED_NOT_AFTER.seconds // 60} minutes "
            "ahead)")
    return value
