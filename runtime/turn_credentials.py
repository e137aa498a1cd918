"""TURN REST credentials: short-lived, per session, checked by coturn without a user database.

The TURN REST API draft (draft-uberti-behave-turn-rest): the user name is
``<unix expiry>:<session id>`` and the password ``base64(HMAC-SHA1(secret, user name))``. coturn
with ``use-auth-secret`` and the same ``static-auth-secret`` recomputes the password and refuses
an expired or forged one, so the core mints credentials per session and nothing is stored.
The secret never leaves the core and coturn; credentials are never logged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from protos.safetynet.v1 import mqtt_pb2
from runtime.webrtc import IceServer, WebRtcSettings


@dataclass(frozen=True)
class TurnSettings:
    """``urls`` of the TURN server(s), the shared ``secret``, credential lifetime."""

    urls: tuple[str, ...]
    secret: str = field(repr=False)
    ttl_seconds: int = 3600

    def __post_init__(self) -> None:
        if not self.urls or not all(u.startswith(("turn:", "turns:")) for u in self.urls):
            raise ValueError("turn.urls must list turn: or turns: URLs")
        if len(self.secret) < 16:
            raise ValueError("turn secret must be at least 16 characters")
        if not 60 <= self.ttl_seconds <= 7 * 86400:
            raise ValueError("turn.ttl_seconds must be between 60 and 604800")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> TurnSettings:
        """From a TOML ``[turn]`` table: ``urls``, ``secret_file`` (or ``secret``), ``ttl_seconds``."""
        unknown = set(data) - {"urls", "secret", "secret_file", "ttl_seconds"}
        if unknown:
            raise ValueError(f"unknown turn setting(s): {', '.join(sorted(unknown))}")
        urls = data.get("urls", [])
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ValueError("turn.urls must be a list of turn: URLs")
        secret = data.get("secret")
        if "secret_file" in data:
            path = base / str(data["secret_file"])
            try:
                secret = path.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"turn.secret_file {path}: {exc.strerror}") from exc
        if not isinstance(secret, str):
            raise ValueError("turn needs secret_file (or secret)")
        ttl = data.get("ttl_seconds", 3600)
        if not isinstance(ttl, int):
            raise ValueError("turn.ttl_seconds must be a whole number of seconds")
        return cls(urls=tuple(urls), secret=secret, ttl_seconds=ttl)


def rest_credential(secret: str, session_id: str, expires: int) -> tuple[str, str]:
    """(user name, password) valid until ``expires`` (unix seconds) for ``session_id``."""
    username = f"{expires}:{session_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def mint(settings: TurnSettings, session_id: str, *, now: float | None = None) -> IceServer:
    """An ICE server entry for one session, expiring ``ttl_seconds`` from ``now``."""
    expires = int(now if now is not None else time.time()) + settings.ttl_seconds
    username, password = rest_credential(settings.secret, session_id, expires)
    return IceServer(urls=settings.urls, username=username, credential=password)


def to_proto(servers: Iterable[IceServer]) -> list[mqtt_pb2.IceServer]:
    return [mqtt_pb2.IceServer(urls=list(s.urls), username=s.username or "",
                               credential=s.credential or "") for s in servers]


def from_proto(messages: Iterable[mqtt_pb2.IceServer]) -> tuple[IceServer, ...]:
    """Servers from the wire; entries with an URL that is not stun:/turn:/turns: are dropped."""
    servers = []
    for message in messages:
        urls = tuple(u for u in message.urls if u.startswith(("stun:", "turn:", "turns:")))
        if urls:
            servers.append(IceServer(urls=urls, username=message.username or None,
                                     credential=message.credential or None))
    return tuple(servers)


def with_session_servers(settings: WebRtcSettings, servers: tuple[IceServer, ...]) -> WebRtcSettings:
    """``settings`` plus the servers minted for one session (configured ones stay first)."""
    if not servers:
        return settings
    return replace(settings, ice_servers=(*settings.ice_servers, *servers))
