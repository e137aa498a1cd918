"""A district operator's local credential: what provisioning issues and the agent checks offline.

A credential reads ``sn1:<district>:<operator>:<secret>``: the district and operator are in
clear so an agent can say at once that a credential belongs to another district; the secret is
32 random bytes (URL-safe base64). Only its scrypt hash (``cryptography``'s Scrypt, n=2^14, r=8,
p=1, a 16-byte salt) is written into the district's bundle, as
``scrypt$<n>$<r>$<p>$<salt>$<hash>``. The secret is shown once, when it is issued.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from protos.topics import check_id

PREFIX: Final = "sn1"
_N, _R, _P, _LENGTH = 2**14, 8, 1, 32


@dataclass(frozen=True, slots=True)
class ParsedCredential:
    district_id: str
    operator_id: str
    secret: str

    def __repr__(self) -> str:  # never show the secret in a log or a traceback
        return f"ParsedCredential({self.district_id!r}, {self.operator_id!r}, secret=…)"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(district_id: str, operator_id: str) -> tuple[str, str]:
    """A new credential for ``operator_id`` of ``district_id`` and its hash: (credential, hash)."""
    check_id(district_id, "district id")
    check_id(operator_id, "operator id")
    secret = _b64(secrets.token_bytes(32))
    return f"{PREFIX}:{district_id}:{operator_id}:{secret}", hash_secret(secret)


def parse(credential: str) -> ParsedCredential:
    """Split a credential; ValueError naming what is wrong (never echoing the secret)."""
    parts = credential.strip().split(":")
    if len(parts) != 4 or parts[0] != PREFIX or not all(parts):
        raise ValueError("not a local credential: expected sn1:<district>:<operator>:<secret>")
    return ParsedCredential(parts[1], parts[2], parts[3])


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = Scrypt(salt=salt, length=_LENGTH, n=_N, r=_R, p=_P).derive(secret.encode())
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` is the one ``stored`` (a ``hash_secret`` result) was made from."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        kdf = Scrypt(salt=_unb64(salt), length=len(_unb64(digest)), n=int(n), r=int(r), p=int(p))
        kdf.verify(secret.encode(), _unb64(digest))
    except (ValueError, InvalidKey):
        return False
    return True
