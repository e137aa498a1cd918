"""The core's configuration: one TOML file (or command-line flags), into a frozen dataclass.

    listen = "127.0.0.1:50051"
    database = "core.sqlite3"         # relative paths are taken from the file's folder
    audit_database = "audit.sqlite3"  # the tamper-evident audit log (its own file and lock)
    session_ttl_seconds = 259200      # cap on any session (72 h, the longest time box); the grant ends it first
    answer_timeout_seconds = 10
    grant_key = "grant-signing.key"   # Ed25519, created (0600) when missing; .pub beside it
    checkpoint_key = "/etc/safetynet/audit-checkpoint.key"  # optional: the audit log's own key,
                                      # only read (never created) when named; by default
                                      # audit-checkpoint.key beside the database, created 0600
    audit_witness_files = ["/var/lib/safetynet-auditor/witness.jsonl"]  # optional: append-only
                                      # files the checkpoints are copied to (docs/audit.md)
    policy = "policy.toml"            # optional: the city's policy; the shipped default otherwise
    facilities = "facilities.csv"     # optional: parking and hazardous facilities (119)
    sweep_seconds = 1                 # how often ended grants are looked for
    agent_silence_seconds = 120       # an agent not heard from this long is offline (0: never);
                                      # more than its heartbeat_seconds (30) allows to be lost

    tls_cert_file = "tls/server.crt"        # optional: gRPC over TLS (both files, from
    tls_key_file = "tls/server.key"          # `safetynet provision init`); plain without them
    tls_client_ca_file = "tls/ca.crt"        # optional: also require client certificates
    http_listen = "127.0.0.1:8080"    # optional: the operators' browser console and WHEP (HTTPS
                                      # with the TLS files above); off when missing or empty
    district_outlines = "districts.geojson"  # optional: district outlines for the console's map

    [broker]
    host = "127.0.0.1"
    port = 1883                       # TLS when ca_file is set: ca_file, cert_file, key_file
    # hosts = ["mqtt1:8883", "mqtt2:8883", "mqtt3:8883"]   # a cluster: tried in turn, instead
    # connect_timeout = 5             # of host/port; max_subscribe_qos = 0 on NATS
    #                                   (docs/scale-out.md)
    # standby = true                  # with hosts: a 2nd connection for signalling

    [storage]                         # optional: all the core's state on PostgreSQL, shared by
    url = "postgresql://safetynet@db.city.example/safetynet"   # several core replicas: registry,
                                      # sessions, incidents, operators, evidence, the audit chain
                                      # and leadership; `database` and `audit_database` are then
                                      # not used (password in ~/.pgpass; docs/scale-out.md)

    [relays]                          # optional: cloud relays this core accepts (docs/cloud-relay.md)
    relay-1 = "relay-1.pub"           # relay id = its public key (safetynet relay init writes both)

    [turn]                            # optional: TURN for viewers behind NAT (coturn, REST API)
    urls = ["turn:turn.city.example:3478?transport=udp"]
    secret_file = "turn-secret"       # coturn's static-auth-secret; credentials minted per session
    ttl_seconds = 3600
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud_core.exceptions import ConfigError
from cloud_core.storage.settings import StorageSettings
from protos.topics import check_id
from runtime.mqtt_link import BrokerSettings
from runtime.turn_credentials import TurnSettings


@dataclass(frozen=True)
class CoreConfig:
    database: Path
    listen: str = "127.0.0.1:50051"
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    turn: TurnSettings | None = None
    session_ttl_seconds: float = 259200.0
    answer_timeout_seconds: float = 10.0
    client_id: str = "safetynet-core"
    audit_database_file: Path | None = None  # default: audit.sqlite3 beside the database
    grant_key_file: Path | None = None      # default: beside the database
    policy_file: Path | None = None         # default: the shipped policy
    facilities_file: Path | None = None
    sweep_seconds: float = 1.0
    agent_silence_seconds: float = 120.0
    tls_cert_file: Path | None = None       # gRPC over TLS when set (with tls_key_file)
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None  # mutual TLS: clients need a certificate from this CA
    http_listen: str = ""                   # console + WHEP (HTTP, or HTTPS with the TLS files)
    district_outlines_file: Path | None = None  # GeoJSON outlines drawn on the console's map
    checkpoint_key_file: Path | None = None  # the audit log's own key; only read when set
    audit_witness_files: tuple[Path, ...] = ()  # append-only copies of every checkpoint
    #: Cloud relays this core accepts: relay id -> the relay's public key file ([relays] table;
    #: docs/cloud-relay.md). A relay whose registration that key does not verify is refused.
    relay_keys: Mapping[str, Path] = field(default_factory=dict)
    storage: StorageSettings | None = None  # PostgreSQL for all state, the audit and leadership

    @property
    def checkpoint_key_path(self) -> Path:
        return self.checkpoint_key_file or self.database.parent / "audit-checkpoint.key"

    @property
    def checkpoint_public_key_path(self) -> Path:
        return self.checkpoint_key_path.with_suffix(".pub")

    @property
    def audit_database(self) -> Path:
        return self.audit_database_file or self.database.parent / "audit.sqlite3"

    @property
    def audit_location(self) -> Path | str:
        """Where the audit chain lives: the ``[storage]`` URL, else the SQLite file."""
        return self.storage.url if self.storage is not None else self.audit_database

    @property
    def grant_key_path(self) -> Path:
        return self.grant_key_file or self.database.parent / "grant-signing.key"

    @property
    def grant_public_key_path(self) -> Path:
        return self.grant_key_path.with_suffix(".pub")

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
                               "answer_timeout_seconds", "client_id", "grant_key", "policy",
                               "facilities", "sweep_seconds", "agent_silence_seconds",
                               "tls_cert_file", "tls_key_file",
                               "tls_client_ca_file", "http_listen", "district_outlines", "turn",
                               "checkpoint_key", "audit_witness_files", "storage", "relays",
                               "audit_database"}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        database = data.get("database", "core.sqlite3")
        if not isinstance(database, str):
            raise ValueError("database must be a file path")
        listen = data.get("listen", "127.0.0.1:50051")
        if not isinstance(listen, str) or ":" not in listen:
            raise ValueError(f"listen must be HOST:PORT, got {listen!r}")
        http_listen = data.get("http_listen", "")
        if not isinstance(http_listen, str) or (http_listen and ":" not in http_listen):
            raise ValueError(f"http_listen must be HOST:PORT (or empty: no console), got {http_listen!r}")
        numbers: dict[str, Any] = {}
        for key, default in (("session_ttl_seconds", 259200.0), ("answer_timeout_seconds", 10.0),
                             ("sweep_seconds", 1.0)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{key} must be a positive number, got {value!r}")
            numbers[key] = float(value)
        silence = data.get("agent_silence_seconds", 120.0)
        if isinstance(silence, bool) or not isinstance(silence, int | float) or silence < 0:
            raise ValueError(f"agent_silence_seconds must be a number of seconds (0: never), "
                             f"got {silence!r}")
        numbers["agent_silence_seconds"] = float(silence)
        broker = data.get("broker", {})
        if not isinstance(broker, dict):
            raise ValueError("[broker] must be a table")
        paths: dict[str, Any] = {}
        for key, field_name in (("grant_key", "grant_key_file"), ("policy", "policy_file"),
                                ("facilities", "facilities_file"), ("tls_cert_file", "tls_cert_file"),
                                ("tls_key_file", "tls_key_file"),
                                ("tls_client_ca_file", "tls_client_ca_file"),
                                ("district_outlines", "district_outlines_file"),
                                ("checkpoint_key", "checkpoint_key_file"),
                                ("audit_database", "audit_database_file")):
            value = data.get(key)
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError(f"{key} must be a file path")
                paths[field_name] = (base / value).resolve()
        witnesses = data.get("audit_witness_files", [])
        if not isinstance(witnesses, list) or not all(isinstance(w, str) for w in witnesses):
            raise ValueError("audit_witness_files must be a list of file paths")
        paths["audit_witness_files"] = tuple((base / w).resolve() for w in witnesses)
        if ("tls_cert_file" in paths) != ("tls_key_file" in paths):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        turn = data.get("turn")
        if turn is not None and not isinstance(turn, dict):
            raise ValueError("[turn] must be a table")
        storage = data.get("storage")
        if storage is not None and not isinstance(storage, dict):
            raise ValueError("[storage] must be a table")
        storage_settings = None if storage is None else StorageSettings.from_mapping(storage)
        relays = data.get("relays", {})
        if not isinstance(relays, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in relays.items()):
            raise ValueError('[relays] must map relay ids to public key files: relay-1 = "relay-1.pub"')
        for relay_id in relays:
            check_id(relay_id, "relays: relay id")
        paths["relay_keys"] = {k: (base / v).resolve() for k, v in relays.items()}
        return cls(database=(base / database).resolve(), listen=listen, http_listen=http_listen,
                   broker=BrokerSettings.from_mapping(broker, base),
                   turn=TurnSettings.from_mapping(turn, base) if turn is not None else None,
                   client_id=_replica_id(data.get("client_id", "safetynet-core")),
                   storage=storage_settings, **numbers, **paths)


def _replica_id(value: object) -> str:
    """The replica's MQTT client id, which also names its status topic (an id, not free text)."""
    if not isinstance(value, str):
        raise ValueError("client_id must be a string")
    return check_id(value, "client_id")
