"""Ed25519 key files: the core's grant-signing key, and the public keys that agents trust.

The private key is PKCS8 PEM without encryption, created with mode 0600 and refused when group
or others may read or write it; a public key PEM (mode 0644) is what a verifier trusts. Key
material is never logged; only its key id is.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from runtime.exceptions import KeyFileError
from runtime.grant import key_id_for

__all__ = ["load_or_create_signing_key", "load_signing_key", "write_public_key"]

log = structlog.get_logger(__name__)


def load_or_create_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Load the core's Ed25519 signing key from ``path``, creating it (mode 0600) if absent.

    The file is created atomically and never overwritten: if another process creates it first,
    its key is used. Raises KeyFileError when the file is readable or writable by group or others,
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


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """Load an Ed25519 key that must already exist (a key the caller only reads, never creates).

    KeyFileError when it is missing, open to group or others, or not an Ed25519 private key.
    """
    try:
        return _load_private_key(Path(path))
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path}: no signing key there (it is read, never created)") from exc


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
        raise KeyFileError(f"{path}: cannot write the public key: {exc.strerror}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    log.info("grant_key.public_written", path=str(path), key_id=key_id_for(public_key))


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read the key at ``path``; FileNotFoundError passes through, all else is KeyFileError."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise KeyFileError(f"{path}: cannot open the signing key: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            raise KeyFileError(f"{path}: the signing key is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            raise KeyFileError(
                f"{path}: the signing key file has mode {mode:04o}, open to group or others; "
                f"refusing to use it (chmod 600 it, and consider the key compromised)"
            )
        pem = file.read()
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(
            f"{path}: is not an unencrypted PEM private key ({type(exc).__name__})"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: holds a {type(key).__name__}, not an Ed25519 private key")
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
        raise KeyFileError(f"{path}: cannot create the signing key: {exc.strerror}") from exc
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
