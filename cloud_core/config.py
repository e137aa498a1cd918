"""The core's configuration: one TOML file (or command-line flags), into a frozen dataclass.

    listen = "127.0.0.1:50051"
    database = "core.sqlite3"         # relative paths are taken from the file's folder
    session_ttl_seconds = 600
    answer_timeout_seconds = 10

    [broker]
    host = "127.0.0.1"
    port = 1883                       # TLS when ca_file is set: ca_file, cert_file, key_file
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_core.exceptions import ConfigError
from safetynet.mqtt_link import BrokerSettings


@dataclass(frozen=True)
class CoreConfig:
    database: Path
    listen: str = "127.0.0.1:50051"
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    session_ttl_seconds: float = 600.0
    answer_timeout_seconds: float = 10.0
    client_id: str = "safetynet-core"

    @classmethod
    def from_toml(cls, path: Path) -> CoreConfig:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(str(path), "file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
        try:
            return cls.from_mapping(data, path.parent)
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(path), str(exc)) from exc

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> CoreConfig:
        unknown = set(data) - {"listen", "database", "broker", "session_ttl_seconds",
                               "answer_timeout_seconds", "client_id"}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        database = data.get("database", "core.sqlite3")
        if not isinstance(database, str):
            raise ValueError("database must be a file path")
        listen = data.get("listen", "127.0.0.1:50051")
        if not isinstance(listen, str) or ":" not in listen:
            raise ValueError(f"listen must be HOST:PORT, got {listen!r}")
        numbers = {}
        for key, default in (("session_ttl_seconds", 600.0), ("answer_timeout_seconds", 10.0)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{key} must be a positive number, got {value!r}")
            numbers[key] = float(value)
        broker = data.get("broker", {})
        if not isinstance(broker, dict):
            raise ValueError("[broker] must be a table")
        return cls(database=(base / database).resolve(), listen=listen,
                   broker=BrokerSettings.from_mapping(broker, base),
                   client_id=str(data.get("client_id", "safetynet-core")), **numbers)
