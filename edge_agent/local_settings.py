"""``[local]`` in the agent's config: serving the district's own operators while the core is down.

    [local]                                  # optional: without it there is no local mode
    listen = "127.0.0.1:8443"                # the local console and WHEP, on the district's network
    credentials_file = "local-operators.toml"  # issued by `safetynet provision local-operator`
    journal_file = "local-journal.sqlite3"   # hash-chained, 0600; forwarded to the core's audit
    session_minutes = 60                     # a local sign-in and a local view last at most this
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

_KEYS = {"listen", "credentials_file", "journal_file", "session_minutes"}


@dataclass(frozen=True)
class LocalSettings:
    listen_host: str
    listen_port: int
    credentials_file: Path
    journal_file: Path
    session_minutes: float = 60.0

    @classmethod
    def from_mapping(cls, table: dict[str, Any], base: Path) -> LocalSettings:
        unknown = set(table) - _KEYS
        if unknown:
            raise ValueError(f"local: unknown key(s) {', '.join(sorted(unknown))}")
        listen = str(table.get("listen", "127.0.0.1:8443"))
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"local.listen must be HOST:PORT, got {listen!r}")
        minutes = table.get("session_minutes", 60)
        if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
            raise ValueError(f"local.session_minutes must be a positive number, got {minutes!r}")
        return cls(
            listen_host=host, listen_port=int(port),
            credentials_file=(base / str(table.get("credentials_file", "local-operators.toml"))).resolve(),
            journal_file=(base / str(table.get("journal_file", "local-journal.sqlite3"))).resolve(),
            session_minutes=float(minutes))
