"""``safetynet``: the one command line for the core, agents, simulators, the demo and viewers.

Each command group is a module of ``safetynet.commands`` with a ``register(subcommands)``; this
module puts them on one parser and runs the chosen command. Mistakes a user can make (a bad
config, an unknown camera, a core that is down) end with one line naming the problem and a
non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from safetynet.commands import (
    agent,
    audit,
    breakglass,
    cameras,
    core,
    demo,
    dispatch,
    evidence,
    incident,
    operator,
    provision,
    relay,
    sim,
    view,
)
from safetynet.commands.exceptions import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UserError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "UserError", "build_parser", "main"]

#: In the order ``safetynet --help`` lists them.
COMMAND_GROUPS = (core, agent, sim, demo, view, cameras, provision, operator, incident,
                  dispatch, breakglass, audit, evidence, relay)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``safetynet`` parser: every command group's subcommands."""
    parser = argparse.ArgumentParser(
        prog="safetynet",
        description="Safety Net: share district CCTV with emergency agencies over WebRTC, "
                    "with every look on the record.",
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in COMMAND_GROUPS:
        group.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``safetynet`` with ``argv`` (default: the process's arguments); the exit code."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if getattr(args, "passthrough", False):
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    from runtime.logs import configure_logging

    # Quiet by default (stdout stays for results such as --json); commands with --log-level
    # configure their own verbosity.
    configure_logging(getattr(args, "log_level", "warning"))
    try:
        return int(args.func(args))
    except UserError as exc:
        print(f"safetynet: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
