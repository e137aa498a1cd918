"""The edge's own check of a session grant signed by the cloud core.

An agent answers a session offer only if its grant was signed by a core key it trusts, is for
this district, this camera and this session, is inside its validity window, and has not been
used before. The core signs with ``cloud_core.grants.GrantSigner``; both sides share
``GrantClaimsData`` and ``key_id_for`` from ``runtime.grant`` (neither imports the other).

Wire format (protos/safetynet/v1/grant.proto): ``SignedGrant{claims, signature}`` where
``claims`` are the deterministic serialization of ``GrantClaims`` and ``signature`` is Ed25519
over exactly those bytes.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

import structlog
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from google.protobuf.message import DecodeError

from edge_agent.exceptions import ConfigError, GrantRejected
from protos.safetynet.v1 import grant_pb2
from runtime.grant import GrantClaimsData, key_id_for

log = structlog.get_logger(__name__)

DEFAULT_CLOCK_SKEW: Final = timedelta(seconds=5)
DEFAULT_REPLAY_MEMORY: Final = 100_000


class GrantVerifier:
    """Checks grants at the edge agent of one district.

    ``public_keys`` are the core keys this agent trusts (several during a key rotation);
    ``clock`` returns the current tz-aware UTC time. ``max_clock_skew`` tolerates a core clock
    slightly ahead of the agent's for ``not_before`` only: expiry is never extended.

    Accepted session ids are remembered until their grant expires (plus the skew), so a grant
    cannot be used twice; at most ``replay_memory`` live ids are kept, and when that many live
    grants are outstanding new ones are refused rather than forgetting old ones.
    """

    def __init__(
        self,
        public_keys: Ed25519PublicKey | Iterable[Ed25519PublicKey],
        district_id: str,
        clock: Callable[[], datetime],
        *,
        max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        replay_memory: int = DEFAULT_REPLAY_MEMORY,
        issued_after: datetime | None = None,
    ) -> None:
        keys = [public_keys] if isinstance(public_keys, Ed25519PublicKey) else list(public_keys)
        if not keys:
            raise ValueError("a grant verifier needs at least one public key")
        if not district_id:
            raise ValueError("district_id must not be empty")
        if max_clock_skew < timedelta(0):
            raise ValueError("max_clock_skew must not be negative")
        if replay_memory < 1:
            raise ValueError("replay_memory must be at least 1")
        self._keys = {key_id_for(key): key for key in keys}
        self._district_id = district_id
        self._clock = clock
        self._skew = max_clock_skew
        self._replay_memory = replay_memory
        self._accepted: dict[str, datetime] = {}
        # The replay memory dies with the process. With ``issued_after`` set to the agent's start,
        # a grant issued before then is refused: that closes replay across a restart (less the
        # clock-skew allowance) without keeping anything on disk.
        self._issued_after = issued_after - max_clock_skew if issued_after is not None else None
        self._forget_at: list[tuple[datetime, str]] = []
        self._log = log.bind(district=district_id)

    @classmethod
    def from_pem_file(
        cls,
        paths: str | Path | Sequence[str | Path],
        district_id: str,
        clock: Callable[[], datetime],
        *,
        max_clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
        replay_memory: int = DEFAULT_REPLAY_MEMORY,
        issued_after: datetime | None = None,
    ) -> GrantVerifier:
        """A verifier trusting the PEM public key file(s) at ``paths``.

        Raises edge_agent ConfigError when a file cannot be read or holds no Ed25519 key.
        """
        listed = [paths] if isinstance(paths, str | Path) else list(paths)
        keys = [_load_public_key(Path(p)) for p in listed]
        return cls(
            keys,
            district_id,
            clock,
            max_clock_skew=max_clock_skew,
            replay_memory=replay_memory,
            issued_after=issued_after,
        )

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of the core keys this verifier trusts."""
        return frozenset(self._keys)

    def check(self, grant_bytes: bytes, camera_id: str, session_id: str) -> GrantClaimsData:
        """Accept the grant for ``session_id`` on ``camera_id`` or raise GrantRejected.

        On success the session id is remembered, so the same grant is refused next time.
        """
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the verifier's clock must return timezone-aware datetimes")
        claims = self._verified_claims(grant_bytes)
        self._forget_expired(now)
        problem = self._problem(claims, camera_id, session_id, now)
        if problem is None and self._issued_after is not None and claims.not_before < self._issued_after:
            problem = ("grant was issued before this agent started (possible replay across a "
                       "restart); ask the core for a new session")
        if problem is not None:
            self._log.info(
                "grant.rejected",
                camera=camera_id,
                session=session_id,
                key_id=claims.key_id,
                reason=problem,
            )
            raise GrantRejected(problem)
        self._remember(claims)
        self._log.info(
            "grant.accepted",
            camera=camera_id,
            session=session_id,
            operator=claims.operator_id,
            agency=claims.agency,
            incident=claims.incident_id,
            expires_at=claims.expires_at.isoformat(),
        )
        return claims

    def _verified_claims(self, grant_bytes: bytes) -> GrantClaimsData:
        """Parse the envelope, check the signature, and return the claims it vouches for."""
        if not grant_bytes:
            raise self._reject("empty grant")
        try:
            signed = grant_pb2.SignedGrant.FromString(grant_bytes)
        except DecodeError as exc:
            raise self._reject("malformed grant: not a SignedGrant message") from exc
        if not signed.signature:
            raise self._reject("unsigned grant: no signature")
        if not signed.claims:
            raise self._reject("malformed grant: no claims")
        try:
            message = grant_pb2.GrantClaims.FromString(signed.claims)
        except DecodeError as exc:
            raise self._reject("malformed grant: claims are not a GrantClaims message") from exc
        key = self._keys.get(message.key_id)
        if key is None:
            raise self._reject(f"unknown signing key id {message.key_id!r}")
        try:
            key.verify(signed.signature, signed.claims)
        except InvalidSignature as exc:
            raise self._reject("bad signature: the grant was forged or altered") from exc
        try:
            return GrantClaimsData.from_proto(message)
        except ValueError as exc:
            raise self._reject(f"malformed grant: {exc}") from exc

    def _problem(
        self, claims: GrantClaimsData, camera_id: str, session_id: str, now: datetime
    ) -> str | None:
        """Why verified ``claims`` do not admit this session here and now (None: they do)."""
        malformed = claims.problem()
        if malformed is not None:
            return f"malformed grant: {malformed}"
        if claims.district_id != self._district_id:
            return (
                f"grant is for district {claims.district_id!r}, "
                f"this agent serves {self._district_id!r}"
            )
        if claims.camera_id != camera_id:
            return f"grant is for camera {claims.camera_id!r}, not {camera_id!r}"
        if claims.session_id != session_id:
            return f"grant is for session {claims.session_id!r}, not {session_id!r}"
        if now + self._skew < claims.not_before:
            return f"grant is not valid yet (valid from {claims.not_before.isoformat()})"
        if now >= claims.expires_at:
            return f"grant expired at {claims.expires_at.isoformat()}"
        if claims.session_id in self._accepted:
            return f"replayed grant: session {claims.session_id!r} was already accepted"
        if len(self._accepted) >= self._replay_memory:
            return "too many live grants remembered; refusing new ones until some expire"
        return None

    def _remember(self, claims: GrantClaimsData) -> None:
        forget_at = claims.expires_at + self._skew
        self._accepted[claims.session_id] = forget_at
        heapq.heappush(self._forget_at, (forget_at, claims.session_id))

    def _forget_expired(self, now: datetime) -> None:
        while self._forget_at and self._forget_at[0][0] < now:
            _, session_id = heapq.heappop(self._forget_at)
            self._accepted.pop(session_id, None)

    def _reject(self, reason: str) -> GrantRejected:
        self._log.info("grant.rejected", reason=reason)
        return GrantRejected(reason)


def _load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the core's public key: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(str(path), "is not a PEM public key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(str(path), f"holds a {type(key).__name__}, not an Ed25519 public key")
    return key
