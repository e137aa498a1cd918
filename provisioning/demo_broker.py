"""The demo's broker, as strict as a city's: a password per client and the per-district ACL.

``provision broker`` identifies clients by certificate; the demo, on loopback, by user name and
password. The ACL is the same (``broker_config.core_acl`` / ``agent_acl``): default deny, the core
reads every district's reports and writes signalling, each agent only its own district in its
own direction. So on the demo's broker, too, a local process without a password cannot add
cameras, mark a district offline, cut a view or forge session events.

Mosquitto's user names may not contain ':', so a demo agent is ``agent-<district>`` rather than
the certificate CN ``agent:<district>``. Passwords are 192 random bits; the password file holds
PBKDF2-SHA512 hashes (Mosquitto's ``$7$`` format); everything is written 0600.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from provisioning.atomic_write import write_private
from provisioning.broker_config import agent_acl, core_acl
from provisioning.certificate_authority import CORE_MQTT_IDENTITY

PBKDF2_ITERATIONS = 101  # Mosquitto's default for $7$
PASSWORD_FILE = "passwd"
ACL_FILE = "acl"


def demo_agent_user(district_id: str) -> str:
    return f"agent-{district_id}"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """``password`` in Mosquitto's ``$7$`` form: PBKDF2-HMAC-SHA512, base64 salt and hash."""
    salt = salt if salt is not None else secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return (f"$7${PBKDF2_ITERATIONS}${base64.b64encode(salt).decode()}$"
            f"{base64.b64encode(digest).decode()}")


@dataclass(frozen=True)
class DemoBrokerAccess:
    """Who may use the demo's broker: the core and one agent per district, with passwords."""

    districts: tuple[str, ...]
    passwords: dict[str, str] = field(repr=False)

    @classmethod
    def generate(cls, districts: Sequence[str]) -> DemoBrokerAccess:
        users = [CORE_MQTT_IDENTITY, *(demo_agent_user(d) for d in districts)]
        return cls(tuple(districts), {user: secrets.token_urlsafe(24) for user in users})

    @property
    def core_user(self) -> str:
        return CORE_MQTT_IDENTITY

    def acl_text(self) -> str:
        lines = ["# The Safety Net demo's broker ACL: the same rules as `provision broker`.",
                 *core_acl(self.core_user)]
        for district in self.districts:
            lines += ["", *agent_acl(district, demo_agent_user(district))]
        return "\n".join(lines) + "\n"

    def password_file_text(self) -> str:
        return "".join(f"{user}:{password_hash(pw)}\n" for user, pw in self.passwords.items())

    def mosquitto_config(self, work_dir: Path, *, host: str, port: int) -> str:
        """Write the password and ACL files (0600) into ``work_dir``; the config text using them."""
        write_private(work_dir / PASSWORD_FILE, self.password_file_text())
        write_private(work_dir / ACL_FILE, self.acl_text())
        # As root Mosquitto would drop to the `mosquitto` user, which cannot read these 0600
        # files in a private folder: keep the demo's own user instead.
        keep_user = [f"user {pwd.getpwuid(os.geteuid()).pw_name}"] if os.geteuid() == 0 else []
        return "\n".join([
            *keep_user,
            f"listener {port} {host}",
            "allow_anonymous false",
            f"password_file {work_dir / PASSWORD_FILE}",
            f"acl_file {work_dir / ACL_FILE}",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 10000",
            "",
        ])
