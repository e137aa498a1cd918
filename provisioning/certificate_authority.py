"""The city's own certificate authority: it alone vouches for the broker, the core and each agent.

Nothing here trusts or uses a system CA. Keys are ECDSA P-256 (fast to make, small, understood by
OpenSSL, Mosquitto and gRPC); certificates follow RFC 5280 closely enough for strict verifiers
(critical basic constraints and key usage, subject and authority key identifiers, a SAN on every
server certificate).

Identities, as Mosquitto sees them (``use_identity_as_username`` takes the subject CN):

- the core's MQTT client certificate: CN ``safetynet-core`` (``provision init``: the pilot's one
  core)
- a core replica's: CN ``core:<replica>`` (``provision core add``; the replica's ``client_id``,
  which names its status topic, is ``<replica>``)
- a district's agent: CN ``agent:<district>`` (a ``:`` never occurs in an id, so no district or
  replica can ever be named like the core or like another role)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CORE_MQTT_IDENTITY = "safetynet-core"
AGENT_IDENTITY_PREFIX = "agent:"
CORE_REPLICA_PREFIX = "core:"
DEFAULT_SERVER_NAMES = ("localhost", "127.0.0.1")

PrivateKey = ec.EllipticCurvePrivateKey


def agent_identity(district_id: str) -> str:
    """The CN (and so the MQTT user name) of a district's agent."""
    return f"{AGENT_IDENTITY_PREFIX}{district_id}"


def core_replica_identity(replica: str) -> str:
    """The CN (and so the MQTT user name) of core replica ``replica``."""
    return f"{CORE_REPLICA_PREFIX}{replica}"


def new_private_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def load_private_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{path}: not an EC private key")
    return key


def load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def server_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names and IP addresses a server certificate is good for."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return (*san.get_values_for_type(x509.DNSName),
            *(str(a) for a in san.get_values_for_type(x509.IPAddress)))


@dataclass(frozen=True)
class Revocation:
    serial: int
    revoked_at: datetime


class CertificateAuthority:
    """A CA key and its self-signed certificate; issues leaf certificates and CRLs."""

    def __init__(self, key: PrivateKey, certificate: x509.Certificate) -> None:
        self.key = key
        self.certificate = certificate

    @classmethod
    def create(cls, city_name: str, *, valid_days: int = 3650,
               now: datetime | None = None) -> CertificateAuthority:
        now = now or datetime.now(UTC)
        key = new_private_key()
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Safety Net {city_name}"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Safety Net {city_name} city CA"),
        ])
        public = key.public_key()
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key, certificate)

    @classmethod
    def load(cls, key_file: Path, certificate_file: Path) -> CertificateAuthority:
        return cls(load_private_key(key_file), load_certificate(certificate_file))

    @property
    def organization(self) -> str:
        values = self.certificate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return str(values[0].value) if values else "Safety Net"

    def issue_server(self, public_key: ec.EllipticCurvePublicKey, common_name: str,
                     names: Sequence[str], *, valid_days: int = 825,
                     now: datetime | None = None) -> x509.Certificate:
        """A TLS server certificate good for ``names`` (DNS names or IP addresses)."""
        unique = list(dict.fromkeys(names))
        san = x509.SubjectAlternativeName([_general_name(n) for n in unique])
        return self._issue(public_key, common_name, ExtendedKeyUsageOID.SERVER_AUTH,
                           valid_days=valid_days, now=now, san=san, key_encipherment=True)

    def issue_client(self, public_key: ec.EllipticCurvePublicKey, common_name: str, *,
                     unit: str, valid_days: int = 365, now: datetime | None = None,
                     not_before: datetime | None = None,
                     not_after: datetime | None = None) -> x509.Certificate:
        """A TLS client certificate whose CN is the MQTT identity; ``unit`` names its role."""
        return self._issue(public_key, common_name, ExtendedKeyUsageOID.CLIENT_AUTH,
                           valid_days=valid_days, now=now, unit=unit,
                           not_before=not_before, not_after=not_after)

    def _issue(self, public_key: ec.EllipticCurvePublicKey, cn: str, usage: x509.ObjectIdentifier,
               *, valid_days: int, now: datetime | None, san: x509.SubjectAlternativeName | None = None,
               unit: str | None = None, key_encipherment: bool = False,
               not_before: datetime | None = None,
               not_after: datetime | None = None) -> x509.Certificate:
        now = now or datetime.now(UTC)
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization)]
        if unit:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        ca_public = self.key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes)).issuer_name(self.certificate.subject)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - timedelta(minutes=5))
            .not_valid_after(not_after or now + timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=key_encipherment,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public),
                           critical=False)
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def revocation_list(self, revoked: Iterable[Revocation], *, number: int, valid_days: int = 365,
                        now: datetime | None = None) -> x509.CertificateRevocationList:
        """A CRL naming ``revoked``. Past ``valid_days`` OpenSSL rejects every client: renew it."""
        now = now or datetime.now(UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - timedelta(minutes=5))
            .next_update(now + timedelta(days=valid_days))
            .add_extension(x509.CRLNumber(number), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                           critical=False)
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(entry.serial)
                .revocation_date(entry.revoked_at).build())
        return builder.sign(self.key, hashes.SHA256())
