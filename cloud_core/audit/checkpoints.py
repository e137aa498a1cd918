"""Signed checkpoints: the core's Ed25519 statements that record ``seq`` had hash ``head_hash``.

A checkpoint makes deleting or rewriting the records it covers detectable; publishing checkpoints
off the core's host makes deleting the newest records together with their checkpoints detectable.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cloud_core.audit.canonical import canonical_json, iso

CHECKPOINT_KIND: Final = "safetynet.audit.checkpoint.v1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """A signed statement that record ``seq`` of the log had hash ``head_hash`` at ``at``."""

    seq: int
    head_hash: str
    at: datetime
    key_id: str
    signature: str

    def signed_message(self) -> bytes:
        """The bytes the signature covers."""
        return checkpoint_message(self.seq, self.head_hash, self.at, self.key_id)

    def is_signed_by(self, public_key: Ed25519PublicKey) -> bool:
        """Whether ``signature`` is ``public_key``'s signature over this checkpoint."""
        try:
            public_key.verify(bytes.fromhex(self.signature), self.signed_message())
        except (InvalidSignature, ValueError):
            return False
        return True


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short name for a checkpoint key: the first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(raw_public_key(public_key)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class CheckpointSigner:
    """The core's checkpoint key: signs ``(seq, head_hash, at, key_id)`` with Ed25519."""

    private_key: Ed25519PrivateKey = field(repr=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", key_id_of(self.private_key.public_key()))

    @classmethod
    def generate(cls) -> CheckpointSigner:
        """A signer with a fresh key (tests, first start of a pilot)."""
        return cls(Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The key a verifier checks this signer's checkpoints with."""
        return self.private_key.public_key()

    def sign(self, seq: int, head_hash: str, at: datetime) -> Checkpoint:
        """A checkpoint for head ``seq``/``head_hash``, signed now."""
        at = at.astimezone(UTC)
        message = checkpoint_message(seq, head_hash, at, self.key_id)
        signature = self.private_key.sign(message).hex()
        return Checkpoint(
            seq=seq, head_hash=head_hash, at=at, key_id=self.key_id, signature=signature)


def checkpoint_message(seq: int, head_hash: str, at: datetime, key_id: str) -> bytes:
    """The canonical bytes a checkpoint's signature covers."""
    return canonical_json(
        {"kind": CHECKPOINT_KIND, "seq": seq, "head_hash": head_hash, "at": iso(at),
         "key_id": key_id}
    ).encode("ascii")


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    """The key's 32 raw bytes, as ``audit_meta`` stores them (hex) and key ids hash them."""
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
