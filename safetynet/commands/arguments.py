"""What several commands' arguments share: the subcommands type, ``--log-level``, and parsing
HOST:PORT addresses and times into values (a bad one is a ``UserError`` naming the flag)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import TypeAlias

from safetynet.commands.exceptions import UserError

#: What ``add_subparsers()`` returns; each command module's ``register()`` adds to it.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

LOG_LEVELS = ["debug", "info", "warning", "error"]


def add_log_level(parser: argparse.ArgumentParser, default: str = "info") -> None:
    """``--log-level``, for the commands that run something and log while they do."""
    parser.add_argument("--log-level", default=default, choices=LOG_LEVELS,
                        help=f"log verbosity (default {default})")


def host_port(value: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port); ``what`` names the flag in the error."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"{what} must be HOST:PORT, got {value!r}")
    return host, int(port)


def moment(value: str, flag: str) -> datetime:
    """An ISO date or time as an aware datetime (UTC when no zone is given)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise UserError(f"{flag} must be an ISO date or time (e.g. 2026-11-01 or "
                        f"2026-11-01T09:00+09:00), got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
