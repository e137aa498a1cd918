"""Enrol a district (certificate, inventory, bundle, broker ACL) and revoke one.

``add_district`` validates the whole camera inventory before it writes anything: a file with any
bad row changes nothing, and the stored inventory is replaced atomically when it is good.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509

from provisioning.agent_bundle import (
    UNIT_NAME,
    BuiltBundle,
    agent_config_text,
    install_text,
    systemd_unit_text,
    write_bundle,
)
from provisioning.atomic_write import write_private, write_public
from provisioning.broker_config import refresh_access_files
from provisioning.certificate_authority import (
    agent_identity,
    certificate_pem,
    load_certificate,
    load_private_key,
    new_private_key,
    private_key_pem,
)
from provisioning.city import City, DistrictRecord, check_district_id
from provisioning.exceptions import DistrictError, InventoryRejected
from provisioning.local_operators import LOCAL_OPERATORS
from provisioning.service_units import DEFAULT_EXECUTABLE
from runtime.camera_inventory import Progress, inventory_csv, read_inventory

RENEW_BEFORE = timedelta(days=30)


@dataclass(frozen=True)
class Enrolled:
    record: DistrictRecord
    bundle: BuiltBundle
    new_certificate: bool
    broker_updated: bool


def add_district(city: City, district_id: str, *, name: str, cameras_csv: Path,
                 valid_days: int = 365, update: bool = False, renew: bool = False,
                 advertise: tuple[str, ...] = (), out_dir: Path | None = None,
                 progress: Progress | None = None, now: datetime | None = None) -> Enrolled:
    """Validate the inventory, issue (or keep) the agent certificate, write the bundle.

    A district already enrolled needs ``update`` (new inventory, fresh bundle; the certificate is
    kept unless revoked, near expiry, or ``renew``).
    """
    district_id = check_district_id(district_id)
    if not name.strip():
        raise DistrictError(district_id, "--name must not be empty")
    if not 1 <= valid_days <= 3650:
        raise DistrictError(district_id, f"--valid-days must be 1..3650, got {valid_days}")
    existing = city.district(district_id)
    if existing is not None and not update:
        raise DistrictError(district_id, "is already enrolled: pass --update to replace its "
                                         "camera inventory and rebuild its bundle")
    report = read_inventory(cameras_csv, taken_ids=city.camera_ids_elsewhere(district_id),
                            progress=progress)
    if not report.ok:
        raise InventoryRejected(str(cameras_csv), report.problems)

    # The inventory is good: from here on, write.
    now = now or datetime.now(UTC)
    folder = city.district_dir(district_id)
    key_file, cert_file = folder / "tls" / "agent.key", folder / "tls" / "agent.crt"
    needs_certificate = (existing is None or existing.revoked or renew or not cert_file.is_file()
                         or load_certificate(cert_file).not_valid_after_utc - now < RENEW_BEFORE)
    if needs_certificate:
        key = new_private_key()
        certificate = city.authority().issue_client(
            key.public_key(), agent_identity(district_id), unit=f"district {district_id}",
            valid_days=valid_days, now=now)
        write_private(key_file, private_key_pem(key))
        write_public(cert_file, certificate_pem(certificate))
    else:
        certificate = load_certificate(cert_file)
    inventory = inventory_csv(report.cameras)
    write_private(folder / "cameras.csv", inventory)

    previous = () if existing is None else (*existing.previous_serials, existing.serial)
    record = DistrictRecord(
        district_id=district_id, name=name.strip(), serial=certificate.serial_number,
        not_after=certificate.not_valid_after_utc.isoformat(timespec="seconds"),
        issued_at=certificate.not_valid_before_utc.isoformat(timespec="seconds"),
        cameras=len(report.cameras), revoked_at=None,
        previous_serials=tuple(s for s in previous if s != certificate.serial_number))
    city.save_district(record)

    bundle = _build_bundle(city, record, certificate, inventory=inventory, advertise=advertise,
                           out_dir=out_dir or city.bundles_dir, now=now)
    refresh_access_files(city)
    return Enrolled(record, bundle, needs_certificate, city.settings().broker_files is not None)


def _build_bundle(city: City, record: DistrictRecord, certificate: x509.Certificate, *,
                  inventory: str, advertise: tuple[str, ...], out_dir: Path,
                  now: datetime) -> BuiltBundle:
    settings = city.settings()
    folder = city.district_dir(record.district_id)
    load_private_key(folder / "tls" / "agent.key")  # fail here, not at the district, if unreadable
    local_operators = folder / LOCAL_OPERATORS  # `safetynet provision local-operator` writes it
    files = {
        "agent.toml": agent_config_text(
            record.district_id, record.name, city_name=settings.name,
            broker_host=settings.broker_host, broker_port=settings.broker_port,
            core_address=settings.core_address, advertise=advertise,
            local_mode=local_operators.is_file(), broker_nodes=settings.broker_nodes).encode(),
        "cameras.csv": inventory.encode(),
        "grant-public.pem": city.grant_public_key.read_bytes(),
        "tls/ca.crt": city.ca_cert.read_bytes(),
        "tls/agent.crt": certificate_pem(certificate),
        "tls/agent.key": (folder / "tls" / "agent.key").read_bytes(),
        UNIT_NAME: systemd_unit_text(record.district_id, config=Path("/etc/safetynet/agent.toml"),
                                     state_dir=Path("/var/lib/safetynet"),
                                     executable=DEFAULT_EXECUTABLE).encode(),
        "INSTALL.txt": install_text(record.district_id).encode(),
    }
    if local_operators.is_file():
        files[LOCAL_OPERATORS] = local_operators.read_bytes()
    manifest: dict[str, Any] = {
        "district_name": record.name, "city": settings.name,
        "created_at": now.isoformat(timespec="seconds"), "cameras": record.cameras,
        "certificate": {"subject": certificate.subject.rfc4514_string(),
                        "serial": f"{record.serial:x}", "not_after": record.not_after},
    }
    return write_bundle(out_dir, record.district_id, files, manifest)


@dataclass(frozen=True)
class Revoked:
    record: DistrictRecord
    broker_updated: bool


def revoke_district(city: City, district_id: str, *, now: datetime | None = None) -> Revoked:
    """Put the district's agent certificate on the CRL and drop its ACL block."""
    district_id = check_district_id(district_id)
    record = city.district(district_id)
    if record is None:
        raise DistrictError(district_id, "is not enrolled in this city")
    if record.revoked:
        raise DistrictError(district_id, f"was already revoked on {record.revoked_at}")
    now = now or datetime.now(UTC)
    city.revoke(record.serial, now)
    record = replace(record, revoked_at=now.isoformat(timespec="seconds"))
    city.save_district(record)
    refresh_access_files(city)
    return Revoked(record, city.settings().broker_files is not None)
