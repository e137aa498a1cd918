"""Core replicas, each with its own MQTT identity from the city CA (``provision core add|list|revoke``).

Several ``safetynet core`` processes share PostgreSQL and the broker, and each needs a client
certificate of its own: on Mosquitto the CN is both the user name and the client id
(``use_username_as_clientid``), so two replicas on one certificate would throw each other off the
broker in turn; and each replica's ``client_id`` names its retained status topic
(``safetynet/v1/core/status/<client_id>``), which the broker lets that replica alone publish.

``add_replica`` builds the replica's folder beside the others and renames it into place whole, so
a refused or failed enrolment leaves nothing behind:

    core/replicas/<name>/replica.json            its certificate's serial and dates (and revocation)
    core/replicas/<name>/tls/mqtt-client.crt     CN ``core:<name>``, OU ``core``
    core/replicas/<name>/tls/mqtt-client.key     0600
    core/replicas/<name>/core.toml               ``client_id = "<name>"``; everything else is the
                                                 core's, shared: the gRPC server certificate (every
                                                 replica serves the one name), the CA, the grant key
                                                 and the audit checkpoint key (read, never created)

The checkpoint key is the city's one key (``core/audit-checkpoint.key``, where the pilot core
creates it beside its database): the first ``add_replica`` creates it when it is missing, and a
replica's config names it, so a replica only ever reads it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from protos.topics import check_id, core_status_route
from provisioning.agent_bundle import broker_hosts_lines
from provisioning.atomic_write import write_private, write_public
from provisioning.broker_config import refresh_access_files
from provisioning.certificate_authority import (
    CORE_MQTT_IDENTITY,
    certificate_pem,
    core_replica_identity,
    new_private_key,
    private_key_pem,
)
from provisioning.city import City, ReplicaRecord
from provisioning.exceptions import ReplicaError
from runtime.exceptions import KeyFileError
from runtime.signing_keys import load_or_create_signing_key, load_signing_key, write_public_key

#: From a replica's folder back to the core's, where the shared files are.
TO_CORE = Path("..") / ".."
POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class ReplicaAdded:
    record: ReplicaRecord
    folder: Path
    config: Path
    checkpoint_key_created: bool
    broker_updated: bool


@dataclass(frozen=True)
class ReplicaRevoked:
    record: ReplicaRecord
    broker_updated: bool


def check_replica_name(name: str) -> str:
    """``name`` if it can be a replica's client id (an id) and is not the pilot core's own."""
    try:
        check_id(name, "replica name")
    except ValueError as exc:
        raise ReplicaError(name, str(exc)) from exc
    if name == CORE_MQTT_IDENTITY:
        raise ReplicaError(name, f"{CORE_MQTT_IDENTITY!r} is the core from `provision init` "
                                 "(its status topic is taken): choose another name")
    return name


def check_storage_url(url: str, name: str) -> str:
    """A PostgreSQL URL fit for a core.toml any operator may read: no password in it."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError as exc:
        raise ReplicaError(name, f"--storage-url {url!r} is not a URL: {exc}") from exc
    if parts.scheme not in POSTGRES_SCHEMES or not parts.netloc:
        raise ReplicaError(name, f"--storage-url must be a postgresql:// URL, got {url!r}")
    if password is not None:
        raise ReplicaError(name, "--storage-url holds a password: keep it out of core.toml "
                                "(~/.pgpass, PGPASSFILE or PGPASSWORD for the core's user)")
    if any(c.isspace() or c in "\"\\" for c in url):
        raise ReplicaError(name, f"--storage-url {url!r} holds spaces, quotes or backslashes")
    return url


def check_listen(listen: str, name: str) -> str:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(
            c.isspace() or c in "\"\\" for c in host):
        raise ReplicaError(name, f"--listen must be HOST:PORT, got {listen!r}")
    return listen


def add_replica(city: City, name: str, *, listen: str | None = None,
                storage_url: str | None = None, valid_days: int = 825,
                now: datetime | None = None) -> ReplicaAdded:
    """Issue replica ``name`` its MQTT certificate and write its folder; then the broker's ACL.

    Refuses, writing nothing, a name that is not an id, one already enrolled (or revoked: a
    revoked identity is never issued again, enrol the replacement under a new name) and a city
    whose grant key cannot be read.
    """
    name = check_replica_name(name)
    if not 1 <= valid_days <= 3650:
        raise ReplicaError(name, f"--valid-days must be 1..3650, got {valid_days}")
    existing = city.replica(name)
    if existing is not None and existing.revoked:
        raise ReplicaError(name, f"was revoked on {existing.revoked_at}: its identity is not "
                                 "issued again; enrol the replacement under a new name")
    if existing is not None:
        raise ReplicaError(name, f"is already enrolled (certificate serial {existing.serial:x}, "
                                 f"valid until {existing.not_after})")
    folder = city.replica_dir(name)
    if folder.exists():
        raise ReplicaError(name, f"{folder} exists but holds no replica.json: not written by "
                                 "`provision core add`; move it away first")
    settings = city.settings()
    listen = check_listen(listen or f"0.0.0.0:{settings.core_address.rpartition(':')[2]}", name)
    if storage_url is not None:
        storage_url = check_storage_url(storage_url, name)
    try:
        load_signing_key(city.grant_key)
    except KeyFileError as exc:
        raise ReplicaError(name, f"cannot read the city's grant key: {exc}") from exc

    # Everything is checked: from here on, write.
    checkpoint_created = _ensure_checkpoint_key(city, name)
    now = now or datetime.now(UTC)
    key = new_private_key()
    certificate = city.authority().issue_client(
        key.public_key(), core_replica_identity(name), unit="core", valid_days=valid_days,
        now=now)
    record = ReplicaRecord(
        name=name, serial=certificate.serial_number,
        not_after=certificate.not_valid_after_utc.isoformat(timespec="seconds"),
        issued_at=certificate.not_valid_before_utc.isoformat(timespec="seconds"))
    city.replicas_dir.mkdir(parents=True, exist_ok=True)
    building = city.replicas_dir / f".{name}.{secrets.token_hex(4)}.building"
    try:
        write_private(building / "tls" / "mqtt-client.key", private_key_pem(key))
        write_public(building / "tls" / "mqtt-client.crt", certificate_pem(certificate))
        write_public(building / "core.toml", replica_config_text(
            settings.name, name, listen=listen, broker_host=settings.broker_host,
            broker_port=settings.broker_port, storage_url=storage_url,
            broker_nodes=settings.broker_nodes))
        city.save_replica(record, building)
        try:
            os.rename(building, folder)
        except OSError as exc:  # another `core add` of the same name won the race
            raise ReplicaError(name, f"cannot move its folder into place: {exc}") from exc
    finally:
        shutil.rmtree(building, ignore_errors=True)
    refresh_access_files(city)
    return ReplicaAdded(record, folder, folder / "core.toml", checkpoint_created,
                        city.settings().broker_files is not None)


def _ensure_checkpoint_key(city: City, name: str) -> bool:
    """Make sure the city's one checkpoint key exists (and is a key); True when created now."""
    existed = city.checkpoint_key.exists()
    try:
        key = load_or_create_signing_key(city.checkpoint_key)
        write_public_key(city.checkpoint_key.with_suffix(".pub"), key)
    except KeyFileError as exc:
        raise ReplicaError(name, f"the audit checkpoint key: {exc}") from exc
    return not existed


def revoke_replica(city: City, name: str, *, now: datetime | None = None) -> ReplicaRevoked:
    """Put the replica's MQTT certificate on the CRL and drop it from the broker's ACL."""
    name = check_replica_name(name)
    record = city.replica(name)
    if record is None:
        raise ReplicaError(name, "is not enrolled in this city (`provision core list`)")
    if record.revoked:
        raise ReplicaError(name, f"was already revoked on {record.revoked_at}")
    now = now or datetime.now(UTC)
    city.revoke(record.serial, now)
    record = replace(record, revoked_at=now.isoformat(timespec="seconds"))
    city.save_replica(record)
    refresh_access_files(city)
    return ReplicaRevoked(record, city.settings().broker_files is not None)


def replica_config_text(city_name: str, name: str, *, listen: str, broker_host: str,
                        broker_port: int, storage_url: str | None,
                        broker_nodes: Sequence[str] = ()) -> str:
    """The replica's core.toml (cloud_core/config.py): TLS on both links, its own MQTT identity
    (``broker_nodes``: every node of a clustered broker), every other file the core's (paths
    relative to the replica's folder)."""
    core = TO_CORE.as_posix()
    topic = core_status_route(name).topic
    if storage_url is None:
        storage = ["# [storage]                               # the chain every replica shares:",
                   '# url = "postgresql://safetynet@db.city.example:5432/safetynet"',
                   "# (without it this replica keeps an audit chain of its own)"]
    else:
        storage = ["[storage]                                  # the chain every replica shares",
                   f"url = {json.dumps(storage_url)}   # password: ~/.pgpass or PGPASSWORD"]
    return "\n".join([
        f"# Core replica {name!r} of {json.dumps(city_name)}, written by "
        "`safetynet provision core add`.",
        "# Run from the core's folder: safetynet core --config "
        f"replicas/{name}/core.toml",
        f"# Its MQTT identity is {core_replica_identity(name)}; it alone may publish {topic}.",
        f"client_id = {json.dumps(name)}",
        f"listen = {json.dumps(listen)}",
        'database = "core.sqlite3"                 # this replica\'s own',
        f'grant_key = "{core}/grant-signing.key"      # the city\'s one key, shared (read)',
        f'checkpoint_key = "{core}/audit-checkpoint.key"  # the city\'s one key: read, never '
        "created",
        f'tls_cert_file = "{core}/tls/server.crt"   # gRPC over TLS: every replica serves one name',
        f'tls_key_file = "{core}/tls/server.key"',
        "",
        "[broker]                                   # MQTT over TLS with this replica's certificate",
        f"host = {json.dumps(broker_host)}",
        f"port = {broker_port}",
        *broker_hosts_lines(broker_nodes),
        *(["max_subscribe_qos = 0                      # NATS: the core subscribes at QoS 0 "
           "(docs/scale-out.md)"] if broker_nodes else []),
        f'ca_file = "{core}/tls/ca.crt"',
        'cert_file = "tls/mqtt-client.crt"',
        'key_file = "tls/mqtt-client.key"',
        "",
        *storage,
        "",
    ])
