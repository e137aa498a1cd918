"""The city folder: its CA, the core's certificates and keys, and the record of every district.

``safetynet provision init --dir CITY`` creates it; every other ``provision`` command reads and
updates it. It holds the city's most precious secrets (the CA key, the grant-signing key): keep
it on an offline or well-guarded machine and back it up.

    CITY/
      city.json                 the city's name, where agents find the broker and the core
      ca/ca.crt                 the city CA (what every agent, broker and viewer trusts)
      ca/ca.key                 0600
      ca/crl.pem, ca/revoked.json
      core/core.toml            a core config using the files below
      core/safetynet-core.service  its systemd unit (restarts on failure; for the core folder
                                in /var/lib/safetynet/core: provisioning/service_units.py)
      core/tls/ca.crt, server.crt, server.key (0600)            gRPC over TLS
      core/tls/mqtt-client.crt, mqtt-client.key (0600)          the core's MQTT identity
      core/grant-signing.key (0600), core/grant-signing.pub     Ed25519, signs session grants
      core/audit-checkpoint.key (0600), .pub    the audit log's key, made by the first `core add`
                                (or by the pilot core beside its database)
      core/replicas/<name>/replica.json, core.toml, tls/mqtt-client.crt, mqtt-client.key (0600)
                                a core replica's own MQTT identity (`provision core add`); every
                                other file it uses is the core's, shared
      broker/server.crt, server.key (0600)                      issued by `provision broker`
      districts/<id>/district.json, cameras.csv (0600), tls/agent.crt, tls/agent.key (0600)
      bundles/safetynet-agent-<id>/ and bundles/safetynet-agent-<id>.tar.gz
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from protos.topics import check_id
from provisioning.atomic_write import write_private, write_public
from provisioning.certificate_authority import (
    CORE_MQTT_IDENTITY,
    DEFAULT_SERVER_NAMES,
    CertificateAuthority,
    Revocation,
    certificate_pem,
    new_private_key,
    private_key_pem,
)
from provisioning.exceptions import CityError, DistrictError
from provisioning.service_units import CORE_UNIT, core_unit_text
from runtime.camera_inventory import read_inventory
from runtime.exceptions import KeyFileError
from runtime.signing_keys import load_or_create_signing_key, write_public_key

DEFAULT_BROKER_PORT = 8883
DEFAULT_CORE_PORT = 50051


@dataclass(frozen=True)
class BrokerFiles:
    """Where `provision broker` last wrote the broker's files (rewritten on district changes)."""

    out_dir: str
    install_dir: str
    port: int
    bind: str


@dataclass(frozen=True)
class CitySettings:
    name: str
    broker_host: str
    broker_port: int
    core_address: str
    created_at: str
    crl_number: int = 1
    broker_files: BrokerFiles | None = None
    # The MQTT addresses ("host:port") of the city's clustered broker's nodes, once `provision
    # broker --engine nats` wrote them; every agent and core replica config then lists them all.
    broker_nodes: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CitySettings:
        files = data.pop("broker_files", None)
        nodes = tuple(str(node) for node in data.pop("broker_nodes", ()))
        return cls(**data, broker_files=BrokerFiles(**files) if files else None,
                   broker_nodes=nodes)


@dataclass(frozen=True)
class DistrictRecord:
    district_id: str
    name: str
    serial: int
    not_after: str
    issued_at: str
    cameras: int
    revoked_at: str | None = None
    previous_serials: tuple[int, ...] = field(default_factory=tuple)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DistrictRecord:
        data["previous_serials"] = tuple(data.get("previous_serials", ()))
        return cls(**data)


@dataclass(frozen=True)
class ReplicaRecord:
    """A core replica enrolled by ``provision core add``: its MQTT certificate's serial."""

    name: str
    serial: int
    not_after: str
    issued_at: str
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplicaRecord:
        return cls(**data)


class City:
    """An initialised city folder; paths to everything in it, and its records."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    # --- layout -------------------------------------------------------------------------

    @property
    def settings_file(self) -> Path:
        return self.root / "city.json"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "ca" / "crl.pem"

    @property
    def revoked_file(self) -> Path:
        return self.root / "ca" / "revoked.json"

    @property
    def core_dir(self) -> Path:
        return self.root / "core"

    @property
    def grant_key(self) -> Path:
        return self.core_dir / "grant-signing.key"

    @property
    def grant_public_key(self) -> Path:
        return self.core_dir / "grant-signing.pub"

    @property
    def checkpoint_key(self) -> Path:
        """The audit log's checkpoint key every replica reads (the pilot core's default)."""
        return self.core_dir / "audit-checkpoint.key"

    @property
    def replicas_dir(self) -> Path:
        return self.core_dir / "replicas"

    def replica_dir(self, name: str) -> Path:
        return self.replicas_dir / name

    @property
    def broker_dir(self) -> Path:
        return self.root / "broker"

    def district_dir(self, district_id: str) -> Path:
        return self.root / "districts" / district_id

    @property
    def bundles_dir(self) -> Path:
        return self.root / "bundles"

    # --- state --------------------------------------------------------------------------

    @classmethod
    def open(cls, root: Path) -> City:
        city = cls(root)
        if not city.settings_file.is_file() or not city.ca_key.is_file():
            raise CityError(str(city.root), "not a city folder (no city.json or CA key): run "
                                            "`safetynet provision init --dir` first")
        return city

    def settings(self) -> CitySettings:
        return CitySettings.from_json(json.loads(self.settings_file.read_text()))

    def save_settings(self, settings: CitySettings) -> None:
        write_public(self.settings_file, json.dumps(asdict(settings), indent=2) + "\n")

    def authority(self) -> CertificateAuthority:
        try:
            return CertificateAuthority.load(self.ca_key, self.ca_cert)
        except (OSError, ValueError, TypeError) as exc:
            raise CityError(str(self.ca_key), f"cannot load the city CA: {exc}") from exc

    def district(self, district_id: str) -> DistrictRecord | None:
        path = self.district_dir(district_id) / "district.json"
        if not path.is_file():
            return None
        return DistrictRecord.from_json(json.loads(path.read_text()))

    def save_district(self, record: DistrictRecord) -> None:
        write_public(self.district_dir(record.district_id) / "district.json",
                     json.dumps(asdict(record), indent=2) + "\n")

    def districts(self) -> Iterator[DistrictRecord]:
        base = self.root / "districts"
        for folder in sorted(base.iterdir()) if base.is_dir() else ():
            record = self.district(folder.name)
            if record is not None:
                yield record

    def replica(self, name: str) -> ReplicaRecord | None:
        path = self.replica_dir(name) / "replica.json"
        if not path.is_file():
            return None
        return ReplicaRecord.from_json(json.loads(path.read_text()))

    def save_replica(self, record: ReplicaRecord, folder: Path | None = None) -> None:
        """Write the record into the replica's folder (or ``folder``, while it is built)."""
        write_public((folder or self.replica_dir(record.name)) / "replica.json",
                     json.dumps(asdict(record), indent=2) + "\n")

    def replicas(self) -> Iterator[ReplicaRecord]:
        base = self.replicas_dir
        for folder in sorted(base.iterdir()) if base.is_dir() else ():
            record = self.replica(folder.name) if not folder.name.startswith(".") else None
            if record is not None:
                yield record

    def camera_ids_elsewhere(self, district_id: str) -> dict[str, str]:
        """Camera id -> district, over every other district's stored inventory."""
        taken: dict[str, str] = {}
        for record in self.districts():
            if record.district_id == district_id:
                continue
            report = read_inventory(self.district_dir(record.district_id) / "cameras.csv")
            taken.update((c.camera_id, record.district_id) for c in report.cameras)
        return taken

    def revocations(self) -> list[Revocation]:
        if not self.revoked_file.is_file():
            return []
        return [Revocation(int(r["serial"]), datetime.fromisoformat(r["revoked_at"]))
                for r in json.loads(self.revoked_file.read_text())]

    def revoke(self, serial: int, when: datetime) -> None:
        """Add ``serial`` to the CRL (and its record), with a new CRL number."""
        entries = [{"serial": r.serial, "revoked_at": r.revoked_at.isoformat()}
                   for r in self.revocations()]
        entries.append({"serial": serial, "revoked_at": when.isoformat()})
        write_public(self.revoked_file, json.dumps(entries, indent=2) + "\n")
        settings = self.settings()
        self.save_settings(replace(settings, crl_number=settings.crl_number + 1))
        self.write_crl()

    def write_crl(self) -> bytes:
        """(Re)write ca/crl.pem from the revocation record, valid for a year from now."""
        crl = self.authority().revocation_list(self.revocations(),
                                               number=self.settings().crl_number)
        pem = crl.public_bytes(serialization.Encoding.PEM)
        write_public(self.crl, pem)
        return pem


def init_city(root: Path, *, city_name: str, server_names: Sequence[str] = (),
              broker: tuple[str, int] | None = None, core: tuple[str, int] | None = None,
              ca_days: int = 3650, now: datetime | None = None) -> City:
    """Create the city folder: CA, the core's certificates, grant-signing key, core config.

    Refuses a folder that already holds a city CA: a second CA would orphan every agent.
    """
    city = City(root)
    if city.ca_key.exists() or city.settings_file.exists():
        raise CityError(str(city.root), "already holds a city (ca/ca.key or city.json): "
                                        "refusing to replace its CA")
    if not city_name.strip():
        raise CityError(str(city.root), "the city name must not be empty")
    names = [*DEFAULT_SERVER_NAMES, *server_names]
    for name in server_names:
        if not name or any(c.isspace() or c in "/:@" for c in name):
            raise CityError(str(city.root), f"--server-name {name!r} is not a host name or address")
    public_host = server_names[0] if server_names else "127.0.0.1"
    broker_host, broker_port = broker or (public_host, DEFAULT_BROKER_PORT)
    core_host, core_port = core or (public_host, DEFAULT_CORE_PORT)
    now = now or datetime.now(UTC)

    ca = CertificateAuthority.create(city_name, valid_days=ca_days, now=now)
    write_private(city.ca_key, private_key_pem(ca.key))
    write_public(city.ca_cert, certificate_pem(ca.certificate))

    tls = city.core_dir / "tls"
    write_public(tls / "ca.crt", certificate_pem(ca.certificate))
    server_key = new_private_key()
    server = ca.issue_server(server_key.public_key(), "safetynet-core-grpc",
                             [*names, core_host], now=now)
    write_private(tls / "server.key", private_key_pem(server_key))
    write_public(tls / "server.crt", certificate_pem(server))
    mqtt_key = new_private_key()
    mqtt = ca.issue_client(mqtt_key.public_key(), CORE_MQTT_IDENTITY, unit="core",
                           valid_days=825, now=now)
    write_private(tls / "mqtt-client.key", private_key_pem(mqtt_key))
    write_public(tls / "mqtt-client.crt", certificate_pem(mqtt))

    try:
        grant_key = load_or_create_signing_key(city.grant_key)
        write_public_key(city.grant_public_key, grant_key)
    except KeyFileError as exc:
        raise CityError(str(city.grant_key), str(exc)) from exc

    write_public(city.core_dir / "core.toml", core_config_text(
        city_name, listen=f"0.0.0.0:{core_port}", broker_host=broker_host, broker_port=broker_port))
    write_public(city.core_dir / CORE_UNIT, core_unit_text(city_name))
    city.save_settings(CitySettings(
        name=city_name, broker_host=broker_host, broker_port=broker_port,
        core_address=f"{core_host}:{core_port}", created_at=now.isoformat(timespec="seconds")))
    city.write_crl()
    return city


def core_config_text(city_name: str, *, listen: str, broker_host: str, broker_port: int) -> str:
    """The core's TOML (cloud_core/config.py), TLS on both its links; paths relative to it."""
    return "\n".join([
        f"# Cloud core of {json.dumps(city_name)}, written by `safetynet provision init`.",
        "# Run: safetynet core --config core.toml   (keep tls/*.key and grant-signing.key 0600)",
        f"listen = {json.dumps(listen)}",
        'database = "core.sqlite3"',
        'grant_key = "grant-signing.key"          # agents trust grant-signing.pub',
        'tls_cert_file = "tls/server.crt"          # gRPC over TLS, certificate from the city CA',
        'tls_key_file = "tls/server.key"',
        "",
        "[broker]                                   # MQTT over TLS with the core's certificate",
        f"host = {json.dumps(broker_host)}",
        f"port = {broker_port}",
        'ca_file = "tls/ca.crt"',
        'cert_file = "tls/mqtt-client.crt"',
        'key_file = "tls/mqtt-client.key"',
        "",
    ])


def check_district_id(district_id: str) -> str:
    try:
        return check_id(district_id, "district id")
    except ValueError as exc:
        raise DistrictError(district_id, str(exc)) from exc
