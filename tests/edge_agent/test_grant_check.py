"""The edge's grant check, against grants built here straight from the wire contract.

These tests sign with ``cryptography`` and ``grant_pb2`` directly (not with the core's signer),
so they also pin the wire format both sides must agree on.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.exceptions import ConfigError, GrantRejected
from edge_agent.grant_check import GrantVerifier
from protos.safetynet.v1 import grant_pb2
from runtime.grant import GrantClaimsData, key_id_for

NOW = datetime(2025, 5, 1, 3, 0, tzinfo=UTC)
CORE_KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def claims(**changes: object) -> GrantClaimsData:
    base = GrantClaimsData(
        session_id="s-1",
        camera_id="gangnam-001",
        district_id="gangnam",
        operator_id="op-police-1",
        agency="police-112",
        incident_id="INC-1",
        purpose="112 emergency video",
        not_before=NOW,
        expires_at=NOW + timedelta(minutes=10),
        key_id=key_id_for(CORE_KEY.public_key()),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def signed(
    data: GrantClaimsData, key: Ed25519PrivateKey = CORE_KEY, *, signature: bytes | None = None
) -> bytes:
    payload = data.to_proto().SerializeToString(deterministic=True)
    envelope = grant_pb2.SignedGrant(
        claims=payload, signature=key.sign(payload) if signature is None else signature
    )
    wire: bytes = envelope.SerializeToString(deterministic=True)
    return wire


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW + timedelta(seconds=30))


@pytest.fixture
def verifier(clock: FakeClock) -> GrantVerifier:
    return GrantVerifier(CORE_KEY.public_key(), "gangnam", clock)


def rejection(
    verifier: GrantVerifier, grant: bytes, camera: str = "gangnam-001", session: str = "s-1"
) -> str:
    with pytest.raises(GrantRejected) as caught:
        verifier.check(grant, camera, session)
    return caught.value.reason


def test_key_id_is_the_start_of_sha256_of_the_raw_public_key() -> None:
    raw = CORE_KEY.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert key_id_for(CORE_KEY.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


def test_valid_grant_is_accepted_with_its_claims(verifier: GrantVerifier) -> None:
    accepted = verifier.check(signed(claims()), "gangnam-001", "s-1")
    assert accepted == claims()
    assert accepted.expires_at.tzinfo is not None


def test_claims_round_trip_through_the_wire_message() -> None:
    original = claims(not_before=NOW + timedelta(microseconds=123_456))
    assert GrantClaimsData.from_proto(original.to_proto()) == original


@pytest.mark.parametrize(
    ("grant", "reason"),
    [
        (b"", "empty grant"),
        (b"\xff\xff\xff\xff", "malformed grant"),
        (grant_pb2.SignedGrant(claims=b"x").SerializeToString(), "unsigned grant"),
        (grant_pb2.SignedGrant(signature=b"s" * 64).SerializeToString(), "malformed grant"),
        (
            grant_pb2.SignedGrant(claims=b"\xff\xff", signature=b"s" * 64).SerializeToString(),
            "malformed grant",
        ),
    ],
    ids=["empty", "garbage", "unsigned", "no-claims", "garbage-claims"],
)
def test_malformed_grants_are_rejected(verifier: GrantVerifier, grant: bytes, reason: str) -> None:
    assert rejection(verifier, grant).startswith(reason)


def test_truncated_grant_is_rejected(verifier: GrantVerifier) -> None:
    whole = signed(claims())
    for cut in (1, 10, len(whole) // 2, len(whole) - 1):
        assert rejection(verifier, whole[:cut]).startswith(
            ("malformed grant", "unsigned grant", "bad signature", "unknown signing")
        )


def test_forged_signature_is_rejected(verifier: GrantVerifier) -> None:
    # Claims that name the core's key but are signed by someone else.
    assert rejection(verifier, signed(claims(), OTHER_KEY)) == (
        "bad signature: the grant was forged or altered"
    )
    assert rejection(verifier, signed(claims(), signature=b"\x00" * 64)).startswith("bad signature")


def test_altered_claims_are_rejected(verifier: GrantVerifier) -> None:
    good = grant_pb2.SignedGrant.FromString(signed(claims()))
    widened = claims(expires_at=NOW + timedelta(days=30)).to_proto()
    tampered = grant_pb2.SignedGrant(
        claims=widened.SerializeToString(deterministic=True), signature=good.signature
    )
    assert rejection(verifier, tampered.SerializeToString()).startswith("bad signature")


def test_grant_from_an_unknown_key_is_rejected(verifier: GrantVerifier) -> None:
    other_id = key_id_for(OTHER_KEY.public_key())
    grant = signed(claims(key_id=other_id), OTHER_KEY)
    assert rejection(verifier, grant) == f"unknown signing key id {other_id!r}"


def test_rotation_trusts_every_configured_key(clock: FakeClock) -> None:
    verifier = GrantVerifier([CORE_KEY.public_key(), OTHER_KEY.public_key()], "gangnam", clock)
    other_id = key_id_for(OTHER_KEY.public_key())
    verifier.check(signed(claims()), "gangnam-001", "s-1")
    verifier.check(
        signed(claims(session_id="s-2", key_id=other_id), OTHER_KEY), "gangnam-001", "s-2"
    )
    assert verifier.key_ids == {key_id_for(CORE_KEY.public_key()), other_id}


def test_expired_grant_is_rejected(verifier: GrantVerifier, clock: FakeClock) -> None:
    clock.now = NOW + timedelta(minutes=10)  # exactly at expiry: no grace
    assert rejection(verifier, signed(claims())) == ("grant expired at 2025-05-01T03:10:00+00:00")


def test_not_yet_valid_grant_is_rejected_beyond_the_skew(
    verifier: GrantVerifier, clock: FakeClock
) -> None:
    clock.now = NOW - timedelta(seconds=6)
    assert rejection(verifier, signed(claims())).startswith("grant is not valid yet")
    clock.now = NOW - timedelta(seconds=5)  # within the 5 s skew
    verifier.check(signed(claims()), "gangnam-001", "s-1")


def test_skew_is_configurable(clock: FakeClock) -> None:
    clock.now = NOW - timedelta(seconds=3)
    strict = GrantVerifier(CORE_KEY.public_key(), "gangnam", clock, max_clock_skew=timedelta(0))
    assert rejection(strict, signed(claims())).startswith("grant is not valid yet")


def test_wrong_camera_is_rejected(verifier: GrantVerifier) -> None:
    assert rejection(verifier, signed(claims()), camera="gangnam-002") == (
        "grant is for camera 'gangnam-001', not 'gangnam-002'"
    )


def test_wrong_district_is_rejected(verifier: GrantVerifier) -> None:
    grant = signed(claims(district_id="mapo", camera_id="mapo-001"))
    assert rejection(verifier, grant, camera="mapo-001") == (
        "grant is for district 'mapo', this agent serves 'gangnam'"
    )


def test_session_mismatch_is_rejected(verifier: GrantVerifier) -> None:
    assert rejection(verifier, signed(claims()), session="s-other") == (
        "grant is for session 's-1', not 's-other'"
    )


def test_replayed_grant_is_rejected(verifier: GrantVerifier) -> None:
    grant = signed(claims())
    verifier.check(grant, "gangnam-001", "s-1")
    assert rejection(verifier, grant) == "replayed grant: session 's-1' was already accepted"
    # A fresh grant for the same session id is a replay too.
    again = signed(claims(purpose="other"))
    assert rejection(verifier, again).startswith("replayed grant")


def test_replay_memory_is_bounded_and_forgets_expired_sessions(clock: FakeClock) -> None:
    verifier = GrantVerifier(CORE_KEY.public_key(), "gangnam", clock, replay_memory=2)
    for session in ("s-1", "s-2"):
        verifier.check(signed(claims(session_id=session)), "gangnam-001", session)
    third = claims(session_id="s-3", expires_at=NOW + timedelta(hours=1))
    assert rejection(verifier, signed(third), session="s-3").startswith("too many live grants")

    clock.now = NOW + timedelta(minutes=10, seconds=6)  # s-1 and s-2 expired, plus the skew
    verifier.check(signed(third), "gangnam-001", "s-3")
    # An expired grant stays refused (as expired) once forgotten.
    assert rejection(verifier, signed(claims())).startswith("grant expired")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"operator_id": ""}, "claims have no operator_id"),
        ({"key_id": ""}, "unknown signing key id ''"),
        ({"expires_at": NOW}, "claims expire before they become valid"),
    ],
)
def test_incomplete_claims_are_rejected(
    verifier: GrantVerifier, changes: dict[str, object], problem: str
) -> None:
    assert problem in rejection(verifier, signed(claims(**changes)))


def test_claims_without_expiry_are_rejected(verifier: GrantVerifier) -> None:
    message = claims().to_proto()
    message.ClearField("expires_at")
    payload = message.SerializeToString(deterministic=True)
    grant = grant_pb2.SignedGrant(claims=payload, signature=CORE_KEY.sign(payload))
    assert rejection(verifier, grant.SerializeToString()) == (
        "malformed grant: claims lack expires_at"
    )


def test_from_pem_file(tmp_path: Path, clock: FakeClock) -> None:
    pem = tmp_path / "core.pub"
    pem.write_bytes(
        CORE_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    verifier = GrantVerifier.from_pem_file(pem, "gangnam", clock)
    assert verifier.check(signed(claims()), "gangnam-001", "s-1").session_id == "s-1"


def test_from_pem_file_refuses_what_is_not_an_ed25519_public_key(
    tmp_path: Path, clock: FakeClock
) -> None:
    missing = tmp_path / "missing.pub"
    with pytest.raises(ConfigError, match="cannot read"):
        GrantVerifier.from_pem_file(missing, "gangnam", clock)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("not a key\n")
    with pytest.raises(ConfigError, match="is not a PEM public key"):
        GrantVerifier.from_pem_file(garbage, "gangnam", clock)
    ec = tmp_path / "ec.pub"
    ec.write_bytes(
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        GrantVerifier.from_pem_file(ec, "gangnam", clock)


def test_naive_clock_is_a_programming_error() -> None:
    verifier = GrantVerifier(CORE_KEY.public_key(), "gangnam", lambda: datetime(2025, 5, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        verifier.check(signed(claims()), "gangnam-001", "s-1")


def test_grants_issued_before_the_agent_started_are_refused() -> None:
    """Replay memory is per process: a restarted agent refuses grants older than itself."""
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cloud_core.grants import GrantSigner
    from edge_agent.exceptions import GrantRejected
    from edge_agent.grant_check import GrantVerifier
    from runtime.grant import GrantClaimsData

    key = Ed25519PrivateKey.generate()
    signer = GrantSigner(key)
    start = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    verifier = GrantVerifier(key.public_key(), "gangnam", lambda: start + timedelta(seconds=30),
                             issued_after=start, max_clock_skew=timedelta(seconds=5))

    def grant(session_id: str, issued: datetime) -> bytes:
        return signer.sign(GrantClaimsData(
            session_id=session_id, camera_id="gangnam-001", district_id="gangnam",
            operator_id="op", agency="police-112", incident_id="INC-1", purpose="test",
            not_before=issued, expires_at=issued + timedelta(minutes=30)))

    with pytest.raises(GrantRejected, match="before this agent started"):
        verifier.check(grant("s-old", start - timedelta(minutes=1)), "gangnam-001", "s-old")
    # Within the clock-skew allowance, and after the start: accepted.
    verifier.check(grant("s-skew", start - timedelta(seconds=3)), "gangnam-001", "s-skew")
    verifier.check(grant("s-new", start + timedelta(seconds=10)), "gangnam-001", "s-new")
