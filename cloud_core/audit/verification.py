"""Verifying the audit log offline: the hash chain, the signed checkpoints and the triggers.

``verify`` reads the file read-only and reports every finding instead of stopping at the first,
so a reviewer sees the whole extent of an edit, deletion or truncation. It trusts nothing in the
file it is not told to: give it the core's public key from elsewhere to detect a substituted one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cloud_core.audit.canonical import parse_time, record_hash
from cloud_core.audit.checkpoints import Checkpoint, key_id_of, raw_public_key
from cloud_core.audit.records import GENESIS_HASH
from cloud_core.audit.schema import payload_from_row
from cloud_core.audit.store import check_wal_present
from cloud_core.exceptions import AuditChainBroken
from cloud_core.storage.base import Location, RecordFilter, Row, is_postgres, open_audit_reader

if TYPE_CHECKING:
    from collections.abc import Sequence

    from runtime.checkpoint_witness import WitnessedCheckpoint

_MAX_REPORTED_PROBLEMS: Final = 100

_Problem = tuple[int, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyReport:
    """What ``verify`` found.

    ``broken_seq``/``problem`` name the first broken record and what is wrong with it (0 when
    the problem is the log's key and no checkpoint exists); ``problems`` lists every finding (at
    most 100), in seq order. ``key_trusted`` is False when
    the checkpoints were checked against the public key stored in the file itself, which proves
    nothing against someone who could rewrite the file. ``unattested`` counts the records after
    the last good checkpoint, whose deletion no checkpoint would reveal. ``warnings`` are signs of
    interference that do not break the chain (missing triggers).
    """

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    checkpoints: int
    last_checkpoint_seq: int | None
    key_id: str | None
    key_trusted: bool
    broken_seq: int | None = None
    problem: str | None = None
    problems: tuple[tuple[int, str], ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def unattested(self) -> int:
        """Records after the last good checkpoint: their deletion would go unnoticed."""
        return self.head_seq - (self.last_checkpoint_seq or 0)

    def raise_if_broken(self) -> None:
        """Raise ``AuditChainBroken`` for the first problem, if any."""
        if self.broken_seq is not None and self.problem is not None:
            raise AuditChainBroken(self.broken_seq, self.problem)


@dataclass(slots=True)
class _Chain:
    """What walking the records found: how many, the head, the hashes the checkpoints name."""

    records: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    hashes_at: dict[int, str] = field(default_factory=dict)


def verify(db_path: Location, public_key: Ed25519PublicKey | None = None,
           witnesses: Sequence[WitnessedCheckpoint] = ()) -> VerifyReport:
    """Check the chain and the checkpoints of the log in ``db_path``, offline, read-only.

    Give the trusted ``public_key`` (from the core's configuration, not from the file) to detect
    forged checkpoints after a key substitution; without it the key stored in the file is used
    and the report says ``key_trusted=False``. ``witnesses`` are checkpoints a witness kept off
    the core's host: each must still match the log, which is what reveals a log rewritten,
    truncated or re-signed by someone holding the host (and its key). Raises ``AuditError`` only
    when the file cannot be read as an audit log at all; every integrity problem is in the report.
    """
    problems: list[_Problem] = []
    warnings: list[str] = []
    if not is_postgres(db_path):
        check_wal_present(Path(db_path))
    with open_audit_reader(db_path) as reader:
        meta = reader.meta()
        checkpoints = reader.checkpoints()
        wanted = {int(cp["seq"]) for cp in checkpoints} | {w.seq for w in witnesses}
        chain = _walk_chain(reader.records(RecordFilter()), wanted, problems)
        triggers = reader.guards()
        expected = reader.expected_guards

    key, key_trusted, key_problem = _verification_key(meta, public_key)
    key_id = None if key is None else key_id_of(key)
    last_good = _check_checkpoints(checkpoints, key, key_id, chain, problems)
    if key_problem is not None:
        first_cp = min((int(cp["seq"]) for cp in checkpoints), default=0)
        problems.append((min(first_cp, chain.head_seq + 1) if checkpoints else 0, key_problem))

    _check_witnesses(witnesses, public_key, chain, problems, warnings)
    problems.sort(key=lambda item: item[0])
    warnings.extend(
        f"trigger {name} is missing: someone altered the audit tables"
        for name in expected if name not in triggers
    )
    first = problems[0] if problems else None
    return VerifyReport(
        ok=not problems,
        records=chain.records,
        head_seq=chain.head_seq,
        head_hash=chain.head_hash,
        checkpoints=len(checkpoints),
        last_checkpoint_seq=last_good,
        key_id=key_id,
        key_trusted=key_trusted,
        broken_seq=None if first is None else first[0],
        problem=None if first is None else first[1],
        problems=tuple(problems[:_MAX_REPORTED_PROBLEMS]),
        warnings=tuple(warnings),
    )


def _walk_chain(rows: Iterable[Row], wanted: set[int], problems: list[_Problem]) -> _Chain:
    """Check every record against its predecessor, appending findings to ``problems``."""
    chain = _Chain()
    for row in rows:
        chain.records += 1
        seq = int(row["seq"])
        problem = _check_record(row, expected_seq=chain.head_seq + 1, prev_hash=chain.head_hash)
        if problem is not None and len(problems) < _MAX_REPORTED_PROBLEMS:
            problems.append((min(seq, chain.head_seq + 1), problem))
        chain.head_seq, chain.head_hash = seq, str(row["hash"])
        if seq in wanted:
            chain.hashes_at[seq] = chain.head_hash
    return chain


def _check_checkpoints(
    checkpoints: list[dict[str, Any]],
    key: Ed25519PublicKey | None,
    key_id: str | None,
    chain: _Chain,
    problems: list[_Problem],
) -> int | None:
    """Check every checkpoint, appending findings to ``problems``; the last good one's seq."""
    last_good: int | None = None
    previous_seq = 0
    for cp in checkpoints:
        cp_seq = int(cp["seq"])
        problem = _check_checkpoint(cp, key, key_id, chain.head_seq, chain.hashes_at.get(cp_seq),
                                    previous_seq)
        if problem is None:
            last_good = cp_seq if last_good is None else max(last_good, cp_seq)
        elif len(problems) < 2 * _MAX_REPORTED_PROBLEMS:
            problems.append((min(cp_seq, chain.head_seq + 1), problem))
        previous_seq = max(previous_seq, cp_seq)
    return last_good


def _check_record(row: Row, *, expected_seq: int, prev_hash: str) -> str | None:
    """What is wrong with one record given its predecessor, or None.

    Checks in an order that names the cause: a gap (deleted; the first missing seq is the broken
    one), a broken link (reordered, deleted, or the predecessor rewritten), then the record's own
    hash (edited). The caller chains on with the stored hash, so one edit is one finding.
    """
    seq = int(row["seq"])
    if seq != expected_seq:
        missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}..{seq - 1}"
        return f"records {missing} are missing before record {seq}: deleted"
    if row["prev_hash"] != prev_hash:
        return (f"prev_hash does not match the hash of record {seq - 1}: records were reordered "
                f"or deleted, or record {seq - 1} was rewritten")
    try:
        payload = payload_from_row(row)
    except ValueError as exc:
        return f"unreadable record ({exc}): edited"
    if record_hash(payload) != row["hash"]:
        return "hash does not match the record's contents: edited"
    return None


def _verification_key(
    meta: Mapping[str, str], trusted: Ed25519PublicKey | None
) -> tuple[Ed25519PublicKey | None, bool, str | None]:
    """The key to check checkpoints with, whether it is trusted, and a problem with the file's."""
    stored_hex = meta.get("public_key")
    stored: Ed25519PublicKey | None = None
    problem: str | None = None
    if stored_hex is not None:
        try:
            stored = Ed25519PublicKey.from_public_bytes(bytes.fromhex(stored_hex))
        except ValueError:
            problem = "the public key stored in audit_meta is malformed"
    if trusted is None:
        return stored, False, problem
    if stored is not None and raw_public_key(stored) != raw_public_key(trusted):
        problem = (f"the public key stored in the file (key id {key_id_of(stored)}) is not the "
                   f"trusted key (key id {key_id_of(trusted)}): substituted key")
    return trusted, True, problem


def _check_checkpoint(
    cp: Mapping[str, Any],
    key: Ed25519PublicKey | None,
    key_id: str | None,
    head_seq: int,
    stored_hash: str | None,
    previous_seq: int,
) -> str | None:
    """What is wrong with one checkpoint, or None: its signature, then what it attests."""
    seq = int(cp["seq"])
    name = f"checkpoint {cp['id']} (record {seq})"
    if key is None:
        return f"{name} cannot be checked: no public key given or stored"
    try:
        checkpoint = Checkpoint(seq=seq, head_hash=str(cp["head_hash"]),
                                at=parse_time(str(cp["at"])), key_id=str(cp["key_id"]),
                                signature=str(cp["signature"]))
    except ValueError as exc:
        return f"{name} is unreadable ({exc}): forged checkpoint"
    if checkpoint.key_id != key_id or not checkpoint.is_signed_by(key):
        return f"{name} has a bad signature under key id {key_id}: forged checkpoint"
    if seq > head_seq:
        return (f"{name} attests records up to {seq} but the log ends at {head_seq}: "
                "records were truncated")
    if stored_hash is None:
        return f"{name} attests record {seq}, which is missing: deleted"
    if stored_hash != checkpoint.head_hash:
        return f"{name} attests a different hash for record {seq}: history was rewritten"
    if seq < previous_seq:
        return f"{name} goes back from record {previous_seq}: checkpoints were reordered"
    return None



def _check_witnesses(
    witnesses: Sequence[WitnessedCheckpoint],
    trusted: Ed25519PublicKey | None,
    chain: _Chain,
    problems: list[_Problem],
    warnings: list[str],
) -> None:
    """Every head a witness kept must still be in the log with the hash the witness saw.

    With a trusted key, a witnessed entry not signed by it is set aside (a witness file is not
    itself proof); without one, the witness's copy is taken as the trust anchor it is.
    """
    ignored = 0
    for witnessed in witnesses:
        seq = witnessed.seq
        if trusted is not None and not _witness_signed_by(witnessed, trusted):
            ignored += 1
            continue
        where = f"a witness holds checkpoint {seq} (signed {witnessed.at})"
        if seq > chain.head_seq:
            problems.append((chain.head_seq + 1,
                             f"{where} but the log ends at record {chain.head_seq}: "
                             "records were truncated"))
        elif chain.hashes_at.get(seq) is None:
            problems.append((seq, f"{where} and record {seq} is missing: deleted"))
        elif chain.hashes_at[seq] != witnessed.head_hash:
            problems.append((seq, f"{where} with a different hash for record {seq}: "
                                  "history was rewritten (and re-signed)"))
    if ignored:
        warnings.append(f"{ignored} witnessed checkpoint(s) are not signed by the trusted key "
                        "and were not used")


def _witness_signed_by(witnessed: WitnessedCheckpoint, key: Ed25519PublicKey) -> bool:
    try:
        checkpoint = Checkpoint(seq=witnessed.seq, head_hash=witnessed.head_hash,
                                at=parse_time(witnessed.at), key_id=witnessed.key_id,
                                signature=witnessed.signature)
    except ValueError:
        return False
    return checkpoint.key_id == key_id_of(key) and checkpoint.is_signed_by(key)
