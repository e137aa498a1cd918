"""Local-mode credentials of a district's operators: ``local-operators.toml`` in its bundle.

    district = "gangnam"
    [[operators]]
    id = "kim"
    role = "operator"                 # operator | supervisor
    secret_hash = "scrypt$16384$8$1$…"

Written 0600, whole or not at all. The credential itself (``sn1:<district>:<operator>:<secret>``,
runtime/local_credentials.py) is returned once, to be handed to the operator; only its scrypt
hash is kept. The agent reads the file at start (``[local] credentials_file``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from provisioning.atomic_write import write_private
from provisioning.exceptions import ProvisioningError
from runtime import local_credentials

ROLES = ("operator", "supervisor")
#: Its name in a district's folder and bundle (``provision district add`` includes it when present).
LOCAL_OPERATORS = "local-operators.toml"


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def add_local_operator(path: Path, district_id: str, operator_id: str, role: str, *,
                       replace: bool = False) -> str:
    """Issue a credential for ``operator_id`` into ``path``; return it (shown once)."""
    if role not in ROLES:
        raise ProvisioningError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    operators: list[dict[str, str]] = []
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ProvisioningError(f"{path}: not valid TOML: {exc}") from exc
        if data.get("district") != district_id:
            raise ProvisioningError(f"{path} is for district {data.get('district')!r}, "
                                    f"not {district_id!r}")
        operators = [dict(o) for o in data.get("operators", [])]
    if any(o.get("id") == operator_id for o in operators) and not replace:
        raise ProvisioningError(f"{path} already has operator {operator_id!r} "
                                "(--replace issues a new credential and voids the old one)")
    try:
        credential, secret_hash = local_credentials.issue(district_id, operator_id)
    except ValueError as exc:
        raise ProvisioningError(str(exc)) from exc
    operators = [o for o in operators if o.get("id") != operator_id]
    operators.append({"id": operator_id, "role": role, "secret_hash": secret_hash})
    lines = [f"district = {_toml(district_id)}", ""]
    for o in operators:
        lines += ["[[operators]]", f"id = {_toml(o['id'])}", f"role = {_toml(o['role'])}",
                  f"secret_hash = {_toml(o['secret_hash'])}", ""]
    write_private(path, "\n".join(lines))
    return credential
