"""``safetynet operator add|list|disable``: manage agency operators on the core's database file
(an admin on the core host). Every change goes on the record in the audit database beside it."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from safetynet.commands.arguments import Subcommands
from safetynet.commands.core_database import DEFAULT_AUDIT_DB, add_db_flag, existing_database
from safetynet.commands.exceptions import EXIT_OK, UserError

if TYPE_CHECKING:
    from cloud_core.audit import AuditAction
    from cloud_core.operators import OperatorStore
    from cloud_core.policy import Operator, Policy


def register(subcommands: Subcommands) -> None:
    """Add ``safetynet operator add|list|disable``."""
    p = subcommands.add_parser(
        "operator", help="add, list and disable agency operators",
        description="Manage operators on the core's database (run on the core host).")
    ops = p.add_subparsers(dest="operator_command", metavar="ACTION", required=True)
    _register_add(ops)
    q = ops.add_parser("list", help="list operators", description="List operators.")
    q.add_argument("--json", action="store_true")
    add_db_flag(q)
    q.set_defaults(func=cmd_operator_list)
    q = ops.add_parser("disable", help="disable an operator (their sessions end)",
                       description="Disable an operator: their token stops working at once and "
                                   "the core ends their live sessions within seconds.")
    q.add_argument("name", metavar="NAME")
    add_db_flag(q)
    q.set_defaults(func=cmd_operator_disable)


def _register_add(ops: Subcommands) -> None:
    q = ops.add_parser("add", help="add an operator and print their token once",
                       description="Add an operator. The token is shown once (or written to "
                                   "--token-out with mode 0600) and stored only as a hash.")
    q.add_argument("name", metavar="NAME", help="operator id (lowercase letters, digits, . _ -)")
    q.add_argument("--agency", required=True,
                   help="police-112, fire-119, disaster-room, vulnerable-support or district:<id>")
    q.add_argument("--role", default="operator",
                   choices=["operator", "supervisor", "field", "auditor", "admin", "feed"],
                   help="operator/supervisor: a room that views video; field: an officer the "
                        "112 room dispatches (the /officer page); feed: a system client (a "
                        "carrier's wearable platform, a CAD feed)")
    q.add_argument("--token-out", metavar="FILE", help="write the token to FILE (0600) instead")
    q.add_argument("--policy", metavar="FILE", help="policy file (default: the shipped policy)")
    add_db_flag(q)
    q.set_defaults(func=cmd_operator_add)


def _operator_store(args: argparse.Namespace) -> tuple[OperatorStore, Policy, Path]:
    from cloud_core.operators import OperatorStore
    from cloud_core.policy import Policy, load_policy
    from cloud_core.registry import Registry

    registry = Registry(Path(args.db))
    policy = load_policy(args.policy) if getattr(args, "policy", None) else Policy.default()
    return OperatorStore(registry.db), policy, Path(args.db)


def _audit_operator_change(db: Path, action: AuditAction, operator: Operator) -> None:
    """Operator changes go on the record, in the audit database beside the core's database."""
    from cloud_core.audit import AuditEntry, append_sync

    append_sync(db.parent / DEFAULT_AUDIT_DB, AuditEntry(
        action=action, operator_id=f"local:{getpass.getuser()}",
        details={"operator": operator.operator_id, "agency": operator.agency,
                 "role": str(operator.role)}))


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")


def cmd_operator_add(args: argparse.Namespace) -> int:
    """Add an operator; their token goes to ``--token-out`` (0600) or, once, to stdout."""
    from cloud_core.audit import AuditAction

    store, policy, db = _operator_store(args)
    try:
        operator, token = store.add(args.name, agency=args.agency, role=args.role, policy=policy)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    _audit_operator_change(db, AuditAction.OPERATOR_ADD, operator)
    if args.token_out:
        _write_secret(Path(args.token_out), token)
        print(f"operator {operator.operator_id} ({operator.agency}, {operator.role}) added; "
              f"token written to {args.token_out} (0600)")
    else:
        print(f"operator {operator.operator_id} ({operator.agency}, {operator.role}) added.")
        print("Token (shown once, store it now):", file=sys.stderr)
        print(token)
    return EXIT_OK


def cmd_operator_list(args: argparse.Namespace) -> int:
    """One line (or JSON object) per operator: agency, role, enabled."""
    existing_database(args)
    store, _, _ = _operator_store(args)
    rows = [{"operator_id": o.operator_id, "agency": o.agency, "role": str(o.role),
             "enabled": o.enabled} for o in store.list_all()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            state = "enabled" if row["enabled"] else "DISABLED"
            print(f"{row['operator_id']:<20} {row['agency']:<22} {row['role']:<11} {state}")
    return EXIT_OK


def cmd_operator_disable(args: argparse.Namespace) -> int:
    """Disable an operator: the token stops working, the core ends their sessions."""
    from cloud_core.audit import AuditAction

    existing_database(args)
    store, _, db = _operator_store(args)
    try:
        operator = store.disable(args.name)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    _audit_operator_change(db, AuditAction.OPERATOR_DISABLE, operator)
    print(f"operator {operator.operator_id} disabled; the core ends their sessions within seconds")
    return EXIT_OK
