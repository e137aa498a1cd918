"""Session grants signed by the cloud core, and the core's signing key on disk.

After :func:`cloud_core.policy.decide_view` allows a view, the core signs a grant (session,
camera, district, operator, agency, incident, purpose, validity window) with its Ed25519 key and
forwards it with the offer; the edge agent checks it again with
:class:`edge_agent.grant_check.GrantVerifier`. The claims dataclass is shared from the edge side
so the edge never imports the core.

Key files: the private key is PKCS8 PEM without encryption, created with mode 0600 and refused
when group or others may read or write it; the public key PEM (mode 0644) is what agents trust.
Key material is never logged; only its key id is.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import replace
from pathlib import Path

import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from cloud_core.exceptions import GrantError
from edge_agent.grant_check import GrantClaimsData, key_id_for
from protos.safetynet.v1 import grant_pb2

__all__ = [
    "GrantClaimsData",
    "GrantSigner",
    "key_id_for",
    "load_or_create_signing_key",
    "write_public_key",
]

log = structlog.get_logger(__name__)


class GrantSigner:
    """Signs session grants with the core's Ed25519 key.

    ``key_id`` (first 16 hex chars of sha256 over the raw public key) goes into every grant so
    agents can pick the right key while keys rotate.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public_key = private_key.public_key()
        self._key_id = key_id_for(self._public_key)

    @classmethod
    def from_key_file(cls, path: str | Path) -> GrantSigner:
        """A signer over the key file at ``path``, created there on first use."""
        return cls(load_or_create_signing_key(path))

    @property
    def key_id(self) -> str:
        """Which key this signer signs with."""
        return self._key_id

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key agents verify this signer's grants with."""
        return self._public_key

    def __repr__(self) -> str:
        return f"GrantSigner(key_id={self._key_id!r})"

    def sign(self, claims: GrantClaimsData) -> bytes:
        """A serialized ``SignedGrant`` over ``claims``.

        ``claims.key_id`` is filled in when empty. Raises GrantError when the claims name another
        key or are malformed (missing ids, naive datetimes, expiring before they start).
        """
        if not claims.key_id:
            claims = replace(claims, key_id=self._key_id)
        if claims.key_id != self._key_id:
            raise GrantError(
                f"claims name signing key {claims.key_id!r} but this signer holds {self._key_id!r}"
            )
        problem = claims.problem()
        if problem is not None:
            raise GrantError(f"cannot sign grant for session {claims.session_id!r}: {problem}")
        payload = claims.to_proto().SerializeToString(deterministic=True)
        signed = grant_pb2.SignedGrant(claims=payload, signature=self._key.sign(payload))
        log.debug(
            "grant.signed",
            session=claims.session_id,
            camera=claims.camera_id,
            district=claims.district_id,
            operator=claims.operator_id,
            agency=claims.agency,
            incident=claims.incident_id,
            key_id=self._key_id,
            expires_at=claims.expires_at.isoformat(),
        )
        wire: bytes = signed.SerializeToString(deterministic=True)
        return wire


def load_or_create_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Load the core's Ed25519 signing key from ``path``, creating it (mode 0600) if absent.

    The file is created atomically and never overwritten: if another process creates it first,
    its key is used. Raises GrantError when the file is readable or writable by group or others,
    is not an unencrypted PEM Ed25519 private key, or cannot be read or created.
    """
    path = Path(path)
    try:
        return _load_private_key(path)
    except FileNotFoundError:
        pass
    _create_private_key_file(path, Ed25519PrivateKey.generate())
    key = _load_private_key(path)
    log.info("grant_key.created", path=str(path), key_id=key_id_for(key.public_key()))
    return key


def write_public_key(path: str | Path, key: Ed25519PrivateKey | Ed25519PublicKey) -> None:
    """Write the PEM public key of ``key`` to ``path`` (mode 0644), replacing it atomically."""
    path = Path(path)
    public_key = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    temporary = _temporary_sibling(path)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.fchmod(fd, 0o644)  # not a secret: readable whatever the umask
            _write_all(fd, pem)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as exc:
        raise GrantError(f"{path}: cannot write the public key: {exc.strerror}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    log.info("grant_key.public_written", path=str(path), key_id=key_id_for(public_key))


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read the key at ``path``; FileNotFoundError passes through, all else is GrantError."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise GrantError(f"{path}: cannot open the signing key: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise GrantError(f"{path}: the signing key is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            raise GrantError(
                f"{path}: the signing key file has mode {mode:04o}, open to group or others; "
                f"refusing to use it (chmod 600 it, and consider the key compromised)"
            )
        pem = file.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise GrantError(
            f"{path}: is not an unencrypted PEM private key ({type(exc).__name__})"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise GrantError(f"{path}: holds a {type(key).__name__}, not an Ed25519 private key")
    log.info("grant_key.loaded", path=str(path), key_id=key_id_for(key.public_key()))
    return key


def _create_private_key_file(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` to a 0600 temporary file, then link it into place unless ``path`` exists."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = _temporary_sibling(path)
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(fd, pem)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            log.info("grant_key.created_elsewhere", path=str(path))
    except OSError as exc:
        raise GrantError(f"{path}: cannot create the signing key: {exc.strerror}") from exc
    finally:
        temporary.unlink(missing_ok=True)


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)
