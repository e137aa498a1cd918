"""The core's grant signer and its key files, checked end to end with the edge's verifier."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from cloud_core.exceptions import GrantError
from cloud_core.grants import (
    GrantClaimsData,
    GrantSigner,
    key_id_for,
    load_or_create_signing_key,
    write_public_key,
)
from edge_agent.exceptions import GrantRejected
from edge_agent.grant_check import GrantVerifier
from protos.safetynet.v1 import grant_pb2

NOW = datetime(2025, 5, 1, 3, 0, tzinfo=UTC)


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
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def signer() -> GrantSigner:
    return GrantSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Run with umask 0, so file modes come from the code and not from the environment."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# Signing -----------------------------------------------------------------------------------------


def test_sign_then_verify_round_trip(signer: GrantSigner) -> None:
    verifier = GrantVerifier(signer.public_key, "gangnam", lambda: NOW + timedelta(seconds=1))
    accepted = verifier.check(signer.sign(claims()), "gangnam-001", "s-1")
    assert accepted == claims(key_id=signer.key_id)


def test_signed_grant_carries_the_exact_deterministic_claim_bytes(signer: GrantSigner) -> None:
    wire = grant_pb2.SignedGrant.FromString(signer.sign(claims()))
    expected = claims(key_id=signer.key_id).to_proto().SerializeToString(deterministic=True)
    assert wire.claims == expected
    signer.public_key.verify(wire.signature, wire.claims)
    assert signer.sign(claims()) == signer.sign(claims())  # Ed25519 is deterministic


def test_key_id_is_16_hex_chars(signer: GrantSigner) -> None:
    assert len(signer.key_id) == 16
    int(signer.key_id, 16)
    assert signer.key_id == key_id_for(signer.public_key)
    assert signer.key_id in repr(signer)


def test_claims_naming_another_key_are_not_signed(signer: GrantSigner) -> None:
    with pytest.raises(GrantError, match="claims name signing key 'feedfacefeedface'"):
        signer.sign(claims(key_id="feedfacefeedface"))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"session_id": ""}, "claims have no session_id"),
        ({"camera_id": ""}, "claims have no camera_id"),
        ({"expires_at": NOW - timedelta(seconds=1)}, "claims expire before they become valid"),
        ({"not_before": datetime(2025, 5, 1, 3, 0)}, "not_before is not timezone-aware"),
    ],
)
def test_malformed_claims_are_not_signed(
    signer: GrantSigner, changes: dict[str, object], problem: str
) -> None:
    with pytest.raises(GrantError, match=problem):
        signer.sign(claims(**changes))


def test_grant_of_another_core_is_rejected_at_the_edge(signer: GrantSigner) -> None:
    stranger = GrantSigner(Ed25519PrivateKey.generate())
    verifier = GrantVerifier(signer.public_key, "gangnam", lambda: NOW)
    with pytest.raises(GrantRejected, match="unknown signing key id"):
        verifier.check(stranger.sign(claims()), "gangnam-001", "s-1")


def test_signing_logs_no_key_material(signer: GrantSigner) -> None:
    with capture_logs() as logs:
        signer.sign(claims())
    assert [{k: v for k, v in entry.items() if k != "log_level"} for entry in logs] == [
        {
            "event": "grant.signed",
            "session": "s-1",
            "camera": "gangnam-001",
            "district": "gangnam",
            "operator": "op-police-1",
            "agency": "police-112",
            "incident": "INC-1",
            "key_id": signer.key_id,
            "expires_at": "2025-05-01T03:10:00+00:00",
        }
    ]


# Key files ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("permissive_umask")
def test_signing_key_is_created_with_mode_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "grant-signing.pem"
    with capture_logs() as logs:
        created = load_or_create_signing_key(path)
    assert mode_of(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted
    assert [p.name for p in tmp_path.iterdir()] == ["grant-signing.pem"]  # no temporary left

    again = load_or_create_signing_key(path)
    raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw
    assert again.private_bytes(*raw, serialization.NoEncryption()) == created.private_bytes(
        *raw, serialization.NoEncryption()
    )
    text = repr(logs)
    assert "BEGIN" not in text
    assert created.private_bytes(*raw, serialization.NoEncryption()).hex() not in text
    assert {entry["event"] for entry in logs} == {"grant_key.loaded", "grant_key.created"}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_signing_key_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "grant-signing.pem"
    load_or_create_signing_key(path)
    path.chmod(mode)
    with pytest.raises(GrantError, match=f"has mode {mode:04o}, open to group or others"):
        load_or_create_signing_key(path)
    assert mode_of(path) == mode  # reported, never silently "fixed"


def test_signing_key_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "grant-signing.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key\n")
    os.close(fd)
    with pytest.raises(GrantError, match="is not an unencrypted PEM private key"):
        load_or_create_signing_key(path)


def test_encrypted_or_foreign_signing_keys_are_refused(tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.pem"
    fd = os.open(encrypted, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        ),
    )
    os.close(fd)
    with pytest.raises(GrantError, match="is not an unencrypted PEM private key"):
        load_or_create_signing_key(encrypted)

    ec = tmp_path / "ec.pem"
    fd = os.open(ec, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        generate_private_key(SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    os.close(fd)
    with pytest.raises(GrantError, match="not an Ed25519 private key"):
        load_or_create_signing_key(ec)


def test_signing_key_in_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(GrantError, match="cannot create the signing key"):
        load_or_create_signing_key(tmp_path / "absent" / "grant-signing.pem")


@pytest.mark.usefixtures("permissive_umask")
def test_public_key_is_written_0644_and_trusted_by_the_edge(tmp_path: Path) -> None:
    key = load_or_create_signing_key(tmp_path / "grant-signing.pem")
    public = tmp_path / "grant-signing.pub"
    write_public_key(public, key)
    assert mode_of(public) == 0o644
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")

    write_public_key(public, key.public_key())  # replaces in place
    signer = GrantSigner(key)
    verifier = GrantVerifier.from_pem_file(public, "gangnam", lambda: NOW)
    assert verifier.key_ids == {signer.key_id}
    assert verifier.check(signer.sign(claims()), "gangnam-001", "s-1").session_id == "s-1"


def test_signer_from_key_file(tmp_path: Path) -> None:
    path = tmp_path / "grant-signing.pem"
    first = GrantSigner.from_key_file(path)
    assert GrantSigner.from_key_file(path).key_id == first.key_id
