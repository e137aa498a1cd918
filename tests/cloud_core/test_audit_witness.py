"""Finding 1 of the red-team pass, repeated: someone holding the core's host (its files and its
checkpoint key) rewrites, truncates or re-signs the audit log. ``verify`` alone cannot tell; given
any witness's copy of the checkpoints it can. Also: the unsigned tail is checked before the core
signs it at start, and a plain copy without its WAL is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cloud_core.audit import (
    AuditAction,
    AuditEntry,
    AuditLog,
    AuditLogConfig,
    CheckpointSigner,
    append_sync,
    snapshot,
    verify,
)
from cloud_core.audit.store import AuditStore
from cloud_core.audit.witness import CheckpointWitnesses
from cloud_core.exceptions import AuditError
from runtime.checkpoint_witness import WitnessFile


def entry(n: int) -> AuditEntry:
    return AuditEntry(action=AuditAction.SESSION_OPEN, operator_id=f"op-{n}",
                      camera_ids=(f"cam-{n}",), legal_basis="PIPA art. 25")


async def write_witnessed_log(db: Path, witness: Path, signer: CheckpointSigner, n: int) -> None:
    """``n`` records, a checkpoint every 5, each handed to a witness file (as the core does)."""
    witnesses = CheckpointWitnesses([witness], districts=list)
    config = AuditLogConfig(checkpoint_every=5)
    async with AuditLog.open(db, signer=signer, config=config,
                             on_checkpoint=witnesses.offer) as log:
        for i in range(n):
            await log.append(entry(i))


def rebuild(db: Path, signer: CheckpointSigner, entries: list[AuditEntry]) -> None:
    """The attacker's rewrite: a fresh chain of ``entries``, re-signed with the stolen key, and
    the triggers in place (a new file made by our own code is indistinguishable from the real)."""
    db.unlink()
    for item in entries:
        append_sync(db, item, signer=signer)


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner.generate()


async def test_a_rewritten_and_re_signed_log_is_caught_by_a_witness(
        tmp_path: Path, signer: CheckpointSigner) -> None:
    db, witness = tmp_path / "audit.sqlite3", tmp_path / "agent-witness.jsonl"
    await write_witnessed_log(db, witness, signer, 12)
    assert WitnessFile(witness).last_seq() == 12
    forged = [entry(i) for i in range(12) if i != 3]  # record 4 erased
    forged.append(entry(99))
    rebuild(db, signer, forged)

    assert verify(db, signer.public_key).ok  # the key alone is fooled: it signed the forgery
    report = verify(db, signer.public_key, WitnessFile(witness).read())
    assert not report.ok
    assert "history was rewritten" in (report.problem or "")


async def test_truncation_with_its_checkpoints_is_caught_by_a_witness(
        tmp_path: Path, signer: CheckpointSigner) -> None:
    db, witness = tmp_path / "audit.sqlite3", tmp_path / "auditor.jsonl"
    await write_witnessed_log(db, witness, signer, 12)
    with sqlite3.connect(db) as conn:  # the newest records and their checkpoints, gone
        conn.execute("DROP TRIGGER audit_records_no_delete")
        conn.execute("DROP TRIGGER audit_checkpoints_no_delete")
        conn.execute("DELETE FROM audit_records WHERE seq > 7")
        conn.execute("DELETE FROM audit_checkpoints WHERE seq > 7")
    assert verify(db, signer.public_key).ok
    report = verify(db, signer.public_key, WitnessFile(witness).read())
    assert not report.ok and "truncated" in (report.problem or "")


async def test_witness_entries_not_signed_by_the_trusted_key_are_set_aside(
        tmp_path: Path, signer: CheckpointSigner) -> None:
    db, witness = tmp_path / "audit.sqlite3", tmp_path / "w.jsonl"
    await write_witnessed_log(db, witness, CheckpointSigner.generate(), 5)
    report = verify(db, None, WitnessFile(witness).read())
    assert report.ok
    report = verify(db, signer.public_key, WitnessFile(witness).read())
    assert any("not signed by the trusted key" in w for w in report.warnings)


async def test_an_edit_in_the_unsigned_tail_stops_the_core_from_signing_it(
        tmp_path: Path, signer: CheckpointSigner) -> None:
    db = tmp_path / "audit.sqlite3"
    store = AuditStore.open(db, signer, checkpoint_every=1000)
    store.write([entry(i) for i in range(3)], checkpoint_due=True)
    store.write([entry(i) for i in range(3, 6)], checkpoint_due=False)
    store._conn.close()  # a crash: records 4-6 were never signed
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER audit_records_no_update")
        conn.execute("UPDATE audit_records SET legal_basis = 'none' WHERE seq = 5")
    with pytest.raises(AuditError, match="unsigned tail is broken: record 5"):
        async with AuditLog.open(db, signer=signer):
            pass


async def test_the_log_is_signed_at_start_and_the_head_given_to_witnesses(
        tmp_path: Path, signer: CheckpointSigner) -> None:
    db, witness = tmp_path / "audit.sqlite3", tmp_path / "w.jsonl"
    for i in range(3):
        append_sync(db, entry(i))  # records written without a signer: unattested
    witnesses = CheckpointWitnesses([witness], districts=list)
    async with AuditLog.open(db, signer=signer, on_checkpoint=witnesses.offer):
        assert WitnessFile(witness).last_seq() == 3
    assert verify(db, signer.public_key, WitnessFile(witness).read()).ok


async def test_backup_is_consistent_and_private(tmp_path: Path, signer: CheckpointSigner) -> None:
    db = tmp_path / "audit.sqlite3"
    async with AuditLog.open(db, signer=signer) as log:
        for i in range(8):
            await log.append(entry(i))
        copy = tmp_path / "copy.sqlite3"
        assert snapshot(db, copy) == 8
        assert copy.stat().st_mode & 0o777 == 0o600
        report = verify(copy, signer.public_key)
        assert report.ok and report.records == 8
    assert db.stat().st_mode & 0o777 == 0o600


def test_the_checkpoint_key_is_only_read_when_named(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="read, never created"):
        CheckpointSigner.from_key_file(tmp_path / "missing.key", create=False)
    created = CheckpointSigner.from_key_file(tmp_path / "k.key", create=True)
    assert CheckpointSigner.from_key_file(tmp_path / "k.key", create=False).key_id == created.key_id
