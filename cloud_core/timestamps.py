"""How the core writes a moment as text: in its stores and in the console's JSON."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(moment: datetime | None) -> str | None:
    """ISO-8601 in UTC with microseconds, or None: fixed width, so text order is time order."""
    return None if moment is None else moment.astimezone(UTC).isoformat(timespec="microseconds")
