"""The session grant's claims: what the core vouches for, shared by signer and checker.

The core signs with ``cloud_core.grants.GrantSigner``; the agent checks with
``edge_agent.grant_check.GrantVerifier``. Both take the data model and its proto conversion from
here, so neither imports the other.

Wire format (protos/safetynet/v1/grant.proto): ``SignedGrant{claims, signature}`` where
``claims`` are the deterministic serialization of ``GrantClaims`` and ``signature`` is Ed25519
over exactly those bytes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from protos.safetynet.v1 import grant_pb2

__all__ = ["RELAY_AGENCY", "GrantClaimsData", "key_id_for", "relay_operator"]

#: The agency of a relay grant: the core's grant for a cloud relay's one upstream pull of a camera
#: (docs/cloud-relay.md). Its operator is ``relay_operator(relay_id)``.
RELAY_AGENCY = "system:relay"


def relay_operator(relay_id: str) -> str:
    """The operator id a relay grant names: the relay's own identity."""
    return f"{RELAY_AGENCY}:{relay_id}"


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """The id of a core signing key: first 16 hex chars of sha256 over the raw public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantClaimsData:
    """What the core vouches for in a grant (``GrantClaims`` with tz-aware UTC datetimes).

    ``incident_id`` is empty for a district's standing access to its own cameras.
    """

    session_id: str
    camera_id: str
    district_id: str
    operator_id: str
    agency: str
    incident_id: str
    purpose: str
    not_before: datetime
    expires_at: datetime
    key_id: str = ""

    def to_proto(self) -> grant_pb2.GrantClaims:
        """The wire message for these claims."""
        message = grant_pb2.GrantClaims(
            session_id=self.session_id,
            camera_id=self.camera_id,
            district_id=self.district_id,
            operator_id=self.operator_id,
            agency=self.agency,
            incident_id=self.incident_id,
            purpose=self.purpose,
            key_id=self.key_id,
        )
        message.not_before.FromDatetime(self.not_before.astimezone(UTC))
        message.expires_at.FromDatetime(self.expires_at.astimezone(UTC))
        return message

    @classmethod
    def from_proto(cls, message: grant_pb2.GrantClaims) -> GrantClaimsData:
        """Claims from a wire message; raises ValueError when a timestamp is missing or bad."""
        for name in ("not_before", "expires_at"):
            if not message.HasField(name):
                raise ValueError(f"claims lack {name}")
        try:
            not_before = message.not_before.ToDatetime(tzinfo=UTC)
            expires_at = message.expires_at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"claims carry an invalid timestamp: {exc}") from exc
        return cls(
            session_id=message.session_id,
            camera_id=message.camera_id,
            district_id=message.district_id,
            operator_id=message.operator_id,
            agency=message.agency,
            incident_id=message.incident_id,
            purpose=message.purpose,
            not_before=not_before,
            expires_at=expires_at,
            key_id=message.key_id,
        )

    @property
    def for_relay(self) -> bool:
        """Whether this is a relay grant (a cloud relay's upstream pull), not a viewer's."""
        return self.agency == RELAY_AGENCY

    def problem(self) -> str | None:
        """What makes these claims unfit to sign or accept (None when they are well formed)."""
        for name in ("session_id", "camera_id", "district_id", "operator_id", "agency", "key_id"):
            if not getattr(self, name):
                return f"claims have no {name}"
        for name in ("not_before", "expires_at"):
            value: datetime = getattr(self, name)
            if value.tzinfo is None or value.utcoffset() is None:
                return f"claims' {name} is not timezone-aware"
        if self.expires_at <= self.not_before:
            return "claims expire before they become valid"
        return None
