"""Session grants signed by the cloud core, and the core's signing key on disk.

After :func:`cloud_core.policy.decide_view` allows a view, the core signs a grant (session,
camera, district, operator, agency, incident, purpose, validity window) with its Ed25519 key and
forwards it with the offer; the edge agent checks it again (``edge_agent.grant_check``). The
claims dataclass lives in the shared layer (``runtime.grant``), so neither side imports the other.

Key files are ``runtime.signing_keys``'; here their errors become :class:`GrantError`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from cloud_core.exceptions import GrantError
from protos.safetynet.v1 import grant_pb2
from runtime import signing_keys
from runtime.exceptions import KeyFileError
from runtime.grant import GrantClaimsData, key_id_for

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
    """The core's signing key at ``path``, created (0600) if absent; GrantError when unfit.

    See :func:`runtime.signing_keys.load_or_create_signing_key`.
    """
    try:
        return signing_keys.load_or_create_signing_key(path)
    except KeyFileError as exc:
        raise GrantError(str(exc)) from exc


def write_public_key(path: str | Path, key: Ed25519PrivateKey | Ed25519PublicKey) -> None:
    """Write the PEM public key of ``key`` to ``path`` (0644); GrantError when it cannot."""
    try:
        signing_keys.write_public_key(path, key)
    except KeyFileError as exc:
        raise GrantError(str(exc)) from exc
