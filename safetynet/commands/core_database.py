"""The core's database files, for the commands that work on them directly (``operator``,
``breakglass review``, ``audit verify|export --db``): on the core host, or on a copy offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from safetynet.commands.exceptions import UserError

DEFAULT_DB = "core.sqlite3"
DEFAULT_AUDIT_DB = "audit.sqlite3"


def add_db_flag(parser: argparse.ArgumentParser) -> None:
    """``--db FILE``: the core's database (operator changes go to the audit database beside it)."""
    parser.add_argument("--db", default=DEFAULT_DB, metavar="FILE",
                        help=f"the core's database file (default {DEFAULT_DB}; operator "
                             f"changes are recorded in {DEFAULT_AUDIT_DB} beside it)")


def add_audit_db_flag(parser: argparse.ArgumentParser) -> None:
    """``--db FILE``: the core's audit database."""
    parser.add_argument("--db", default=DEFAULT_AUDIT_DB, metavar="FILE",
                        help=f"the core's audit database (default {DEFAULT_AUDIT_DB})")


def existing_database(args: argparse.Namespace) -> Path:
    """``--db`` as a path, which must exist (a missing file is a user's mistake, not a new db)."""
    path = Path(args.db)
    if not path.exists():
        raise UserError(f"no core database at {path} (use --db FILE)")
    return path
