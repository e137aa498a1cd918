"""The audit log against real SQLite files: chaining, tampering, durability, export, search."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import itertools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from cloud_core.audit import (
    GENESIS_HASH,
    AuditAction,
    AuditEntry,
    AuditLog,
    AuditLogConfig,
    AuditOutcome,
    Checkpoint,
    CheckpointSigner,
    VerifyReport,
    append_sync,
    export,
    search,
    snapshot,
    verify,
)
from cloud_core.exceptions import AuditChainBroken, AuditError

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("audit_writer_child.py")
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def entry(n: int = 0, **overrides: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "action": AuditAction.SESSION_OPEN,
        "operator_id": f"op-{n % 3}",
        "agency": "seoul-119",
        "source_address": "10.0.0.7",
        "camera_ids": (f"cam-{n % 5}", "cam-shared"),
        "incident_id": f"inc-{n % 2}",
        "purpose": "화재 진압",
        "legal_basis": "PIPA art. 18(2)",
        "outcome": AuditOutcome.OK,
        "reason": "incident in radius",
        "period_start": T0,
        "period_end": T0 + timedelta(minutes=10),
        "details": {"n": n, "bytes_sent": 1024 * n},
    }
    fields.update(overrides)
    return AuditEntry(**fields)


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner.generate()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "core.sqlite3"


async def write_log(db: Path, signer: CheckpointSigner, count: int, every: int = 4) -> None:
    """A log of ``count`` records, checkpoints every ``every`` records and on close."""
    config = AuditLogConfig(checkpoint_every=every)
    async with AuditLog.open(db, signer=signer, config=config) as log:
        for n in range(count):
            await log.append(entry(n))


def tamper(db: Path, *statements: str) -> None:
    """What an attacker with the file does: drop the triggers, then change rows."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        triggers = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'audit_%'")]
        for name in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def independent_hash(item: dict[str, Any]) -> str:
    """The record hash as the module docstring defines it, computed without the module."""
    payload = {key: value for key, value in item.items() if key != "hash"}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def broken(report: VerifyReport) -> tuple[int | None, str]:
    assert not report.ok
    return report.broken_seq, report.problem or ""


# Appending and verifying -------------------------------------------------------------------------


async def test_append_then_verify_ok(db: Path, signer: CheckpointSigner) -> None:
    seen: list[Checkpoint] = []
    config = AuditLogConfig(checkpoint_every=10)
    with capture_logs() as logs:
        async with AuditLog.open(db, signer=signer, config=config,
                                 on_checkpoint=seen.append) as log:
            records = [await log.append(entry(n)) for n in range(25)]
            assert [r.seq for r in records] == list(range(1, 26))
            assert records[0].prev_hash == GENESIS_HASH
            assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
            assert [r.entry for r in records] == [entry(n) for n in range(25)]
    assert [e["state"] for e in logs if e["event"] == "audit_log_state"] == [
        "open", "closing", "closed"]
    assert [c.seq for c in seen] == [10, 20, 25]  # every 10, and on close

    report = verify(db, signer.public_key)
    assert report.ok, report.problems
    assert (report.records, report.head_seq, report.head_hash) == (25, 25, records[-1].hash)
    assert (report.checkpoints, report.last_checkpoint_seq, report.unattested) == (3, 25, 0)
    assert report.key_trusted and report.key_id == signer.key_id
    assert report.warnings == ()
    report.raise_if_broken()


async def test_stored_records_equal_returned_ones(db: Path, signer: CheckpointSigner) -> None:
    kst = timezone(timedelta(hours=9))
    submitted = entry(1, period_start=datetime(2026, 3, 1, 18, 0, tzinfo=kst),
                      period_end=None, details={"nested": {"list": [1, 2.5, None, "소방"]}})
    async with AuditLog.open(db, signer=signer) as log:
        record = await log.append(submitted)
        assert await log.search() == [record]
    assert record.entry.period_start == datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert record.entry.period_start.tzinfo is UTC
    assert record.at.tzinfo is UTC
    assert search(db) == [record]


async def test_an_empty_log_verifies(db: Path, signer: CheckpointSigner) -> None:
    async with AuditLog.open(db, signer=signer):
        pass
    report = verify(db, signer.public_key)
    assert report.ok and report.records == 0 and report.head_hash == GENESIS_HASH
    assert report.checkpoints == 0


def test_verify_refuses_what_is_not_an_audit_log(tmp_path: Path) -> None:
    with pytest.raises(AuditError, match="no audit log"):
        verify(tmp_path / "missing.sqlite3")
    other = tmp_path / "registry.sqlite3"
    sqlite3.connect(other).close()
    with pytest.raises(AuditError, match="missing audit_checkpoints"):
        verify(other)


# Bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"action": "camera.delete"}, "unknown audit action 'camera.delete'"),
        ({"outcome": "maybe"}, "unknown audit outcome"),
        ({"period_start": datetime(2026, 3, 1, 9, 0)}, "period_start must be timezone-aware"),
        ({"period_end": datetime(2026, 3, 1, 9, 0)}, "period_end must be timezone-aware"),
        ({"period_end": T0 - timedelta(seconds=1)}, "is before period_start"),
        ({"operator_id": ""}, "operator_id must not be empty"),
        ({"operator_id": None}, "operator_id is required"),
        ({"agency": 119}, "agency must be a string"),
        ({"camera_ids": "cam-1"}, "camera_ids must be a sequence"),
        ({"camera_ids": ("cam-1", "")}, "a camera id must not be empty"),
        ({"reason": "bad \ud800 text"}, "reason is not valid Unicode"),
        ({"details": {"when": T0}}, "details must be plain JSON"),
        ({"details": {"x": float("nan")}}, "details must be plain JSON"),
        ({"details": {"x": "\udcff"}}, "details must be plain JSON"),
        ({"details": {"blob": "x" * 70_000}}, "at most"),
        ({"details": ["not", "a", "mapping"]}, "details must be a mapping"),
    ],
)
def test_bad_entries_raise_value_error(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        entry(**overrides)


async def test_bad_input_never_leaves_a_record(db: Path, signer: CheckpointSigner) -> None:
    async with AuditLog.open(db, signer=signer) as log:
        await log.append(entry(0))
        with pytest.raises(ValueError, match="unknown audit action"):
            await log.append(entry(1, action="nope"))
        with pytest.raises(TypeError):
            await log.append({"action": "session.open"})  # type: ignore[arg-type]
        await log.append(entry(2))
        with pytest.raises(ValueError, match="timezone-aware"):
            await log.search(since=datetime(2026, 1, 1))
    report = verify(db, signer.public_key)
    assert report.ok and report.records == 2


def test_details_are_a_frozen_copy() -> None:
    details: dict[str, Any] = {"k": [1]}
    submitted = entry(details=details)
    details["k"].append(2)
    assert submitted.details == {"k": [1]}
    with pytest.raises(TypeError):
        submitted.details["k"] = 3
    assert entry(camera_ids=["a", "b"]).camera_ids == ("a", "b")
    assert entry(action="access.deny").action is AuditAction.ACCESS_DENY


# The database refuses changes --------------------------------------------------------------------


async def test_triggers_refuse_update_delete_and_replace(
    db: Path, signer: CheckpointSigner
) -> None:
    await write_log(db, signer, 5)
    conn = sqlite3.connect(db)
    try:
        for statement in (
            "UPDATE audit_records SET reason = 'x' WHERE seq = 2",
            "DELETE FROM audit_records WHERE seq = 5",
            "DELETE FROM audit_records",
            "UPDATE audit_checkpoints SET seq = 1",
            "DELETE FROM audit_checkpoints",
            "INSERT OR REPLACE INTO audit_checkpoints SELECT * FROM audit_checkpoints LIMIT 1",
            "UPDATE audit_meta SET value = 'x'",
            "DELETE FROM audit_meta WHERE name = 'public_key'",
            "INSERT OR REPLACE INTO audit_meta VALUES ('public_key', 'x')",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="audit log is append-only"):
                conn.execute(statement)
        # A hand-made row must extend the head: no replaced record 3, no fork from record 4.
        for statement in (
            "INSERT OR REPLACE INTO audit_records SELECT * FROM audit_records WHERE seq = 3",
            "INSERT INTO audit_records SELECT 6, at, action, operator_id, agency, "
            "source_address, camera_ids, incident_id, purpose, legal_basis, outcome, "
            "reason, period_start, period_end, details, prev_hash, hash "
            "FROM audit_records WHERE seq = 5",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="does not extend the chain head"):
                conn.execute(statement)
    finally:
        conn.close()
    assert verify(db, signer.public_key).ok


# Tampering is detected ---------------------------------------------------------------------------


async def test_an_edited_record_is_detected(db: Path, signer: CheckpointSigner) -> None:
    await write_log(db, signer, 10)
    tamper(db, "UPDATE audit_records SET operator_id = 'someone-else' WHERE seq = 5")
    report = verify(db, signer.public_key)
    assert broken(report) == (5, "hash does not match the record's contents: edited")
    assert report.problems == ((5, report.problem),)  # one edit, one finding
    assert any("audit_records_no_update is missing" in w for w in report.warnings)
    with pytest.raises(AuditChainBroken) as raised:
        report.raise_if_broken()
    assert raised.value.seq == 5


async def test_edited_json_is_detected(db: Path, signer: CheckpointSigner) -> None:
    await write_log(db, signer, 6)
    tamper(db, "UPDATE audit_records SET details = '{\"n\":3' WHERE seq = 3",
           "UPDATE audit_records SET camera_ids = '[\"cam-9\"]' WHERE seq = 4")
    report = verify(db, signer.public_key)
    assert broken(report)[0] == 3 and "unreadable" in broken(report)[1]
    assert [seq for seq, _ in report.problems] == [3, 4]


async def test_a_deleted_record_is_detected(db: Path, signer: CheckpointSigner) -> None:
    await write_log(db, signer, 10)
    tamper(db, "DELETE FROM audit_records WHERE seq = 5")
    seq, problem = broken(verify(db, signer.public_key))
    assert seq == 5 and "records 5 are missing before record 6: deleted" in problem


async def test_reordered_records_are_detected(db: Path, signer: CheckpointSigner) -> None:
    await write_log(db, signer, 10)
    columns = ("at", "action", "operator_id", "agency", "source_address", "camera_ids",
               "incident_id", "purpose", "legal_basis", "outcome", "reason", "period_start",
               "period_end", "details", "prev_hash", "hash")
    swap = ", ".join(
        f"{c} = (SELECT {c} FROM audit_records AS o WHERE o.seq = 11 - audit_records.seq)"
        for c in columns)
    tamper(db, f"UPDATE audit_records SET {swap} WHERE seq IN (5, 6)")
    seq, problem = broken(verify(db, signer.public_key))
    assert seq == 5 and "reordered" in problem


async def test_truncating_a_signed_tail_is_detected(db: Path, signer: CheckpointSigner) -> None:
    await write_log(db, signer, 10)  # checkpoints at 4, 8 and 10
    tamper(db, "DELETE FROM audit_records WHERE seq > 8")
    report = verify(db, signer.public_key)
    seq, problem = broken(report)
    assert seq == 9 and "log ends at 8: records were truncated" in problem
    assert report.last_checkpoint_seq == 8


async def test_consistently_rewritten_history_is_caught_by_checkpoints(
    db: Path, signer: CheckpointSigner
) -> None:
    await write_log(db, signer, 10)  # checkpoints at 4, 8 and 10
    records = search(db, limit=10)[::-1]
    rows = []
    prev = records[3].hash
    for record in records[4:]:  # rewrite 5..10 with a different operator and recompute the chain
        item = {**record.to_dict(), "operator_id": "nobody", "prev_hash": prev}
        item["hash"] = prev = independent_hash(item)
        rows.append(item)
    tamper(db, *(
        f"UPDATE audit_records SET operator_id = 'nobody', prev_hash = '{r['prev_hash']}', "
        f"hash = '{r['hash']}' WHERE seq = {r['seq']}" for r in rows))
    report = verify(db, signer.public_key)
    seq, problem = broken(report)
    assert seq == 8 and "history was rewritten" in problem
    assert [s for s, _ in report.problems] == [8, 10]
    assert report.last_checkpoint_seq == 4


async def test_a_forged_checkpoint_is_detected(db: Path, signer: CheckpointSigner) -> None:
    await write_log(db, signer, 10)
    tamper(db, "UPDATE audit_checkpoints SET signature = "
               "substr(signature, 1, 10) || 'ff' || substr(signature, 13) WHERE seq = 8")
    seq, problem = broken(verify(db, signer.public_key))
    assert seq == 8 and "bad signature" in problem and "forged checkpoint" in problem


async def test_a_substituted_key_is_detected(db: Path, signer: CheckpointSigner) -> None:
    """The attacker truncates, re-signs the checkpoints with their own key and swaps it in."""
    await write_log(db, signer, 10)
    attacker = CheckpointSigner.generate()
    head = search(db, limit=1, before_seq=9)[0]
    forged = attacker.sign(head.seq, head.hash, datetime.now(UTC))
    public_hex = attacker.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    tamper(
        db,
        "DELETE FROM audit_records WHERE seq > 8",
        "DELETE FROM audit_checkpoints",
        f"INSERT INTO audit_checkpoints (seq, head_hash, at, key_id, signature) VALUES "
        f"({forged.seq}, '{forged.head_hash}', '{forged.at.isoformat(timespec='microseconds')}', "
        f"'{forged.key_id}', '{forged.signature}')",
        f"UPDATE audit_meta SET value = '{public_hex}' WHERE name = 'public_key'",
        f"UPDATE audit_meta SET value = '{attacker.key_id}' WHERE name = 'key_id'",
    )
    fooled = verify(db)  # the file's own key vouches for the forgery
    assert fooled.ok and not fooled.key_trusted and fooled.key_id == attacker.key_id

    report = verify(db, signer.public_key)
    assert report.key_trusted and report.last_checkpoint_seq is None
    seq, _problem = broken(report)
    assert seq == 8
    messages = " | ".join(p for _, p in report.problems)
    assert "substituted key" in messages and "forged checkpoint" in messages


async def test_opening_with_another_key_is_refused(db: Path, signer: CheckpointSigner) -> None:
    await write_log(db, signer, 1)
    log = AuditLog.open(db, signer=CheckpointSigner.generate())
    with pytest.raises(AuditError, match=f"signed by key '{signer.key_id}'"):
        await log.__aenter__()
    assert log.state == "closed"
    assert verify(db, signer.public_key).ok


# Copies, crashes and concurrency -----------------------------------------------------------------


async def test_verify_a_copy_while_the_log_stays_open(
    db: Path, tmp_path: Path, signer: CheckpointSigner
) -> None:
    async with AuditLog.open(db, signer=signer) as log:
        for n in range(20):
            await log.append(entry(n))
        await log.checkpoint()  # signs the head and copies the WAL into the main file
        plain = tmp_path / "plain-copy.sqlite3"
        shutil.copy(db, plain)  # the main file alone, no -wal

        for n in range(20, 30):
            await log.append(entry(n))
        with_wal = tmp_path / "copy-with-wal.sqlite3"
        shutil.copy(db, with_wal)
        shutil.copy(f"{db}-wal", f"{with_wal}-wal")
        backup = tmp_path / "snapshot.sqlite3"
        snapshot(db, backup)

        plain_report = verify(plain, signer.public_key)
        assert plain_report.ok and plain_report.records == 20
        assert plain_report.last_checkpoint_seq == 20
        for copy in (with_wal, backup):
            report = verify(copy, signer.public_key)
            assert report.ok and report.records == 30 and report.unattested == 10
        await log.append(entry(30))  # the original is still writable
    assert verify(db, signer.public_key).records == 31
    assert verify(plain, signer.public_key).records == 20


async def test_concurrent_appends_make_one_chain(db: Path, signer: CheckpointSigner) -> None:
    config = AuditLogConfig(checkpoint_every=50, max_pending=16, max_batch=32)
    sync_records = []

    def cli_writer() -> None:  # a CLI tool writing the same file meanwhile
        for n in range(20):
            sync_records.append(append_sync(db, entry(n, action=AuditAction.OPERATOR_ADD)))

    async def appender(worker: int) -> list[int]:
        return [(await log.append(entry(worker * 100 + n))).seq for n in range(10)]

    with capture_logs() as logs:
        async with AuditLog.open(db, signer=signer, config=config) as log:
            cli = asyncio.create_task(asyncio.to_thread(cli_writer))
            seqs = await asyncio.gather(*(appender(w) for w in range(100)))
            await cli
    assert any(e["event"] == "audit_queue_full" for e in logs)
    for worker_seqs in seqs:  # each appender's records come out in its order
        assert worker_seqs == sorted(worker_seqs)
    everything = sorted([s for w in seqs for s in w] + [r.seq for r in sync_records])
    assert everything == list(range(1, 1021))
    report = verify(db, signer.public_key)
    assert report.ok, report.problems
    assert report.records == 1020 and report.unattested == 0


async def test_a_failed_write_fails_its_callers_and_the_log_goes_on(
    db: Path, signer: CheckpointSigner
) -> None:
    async with AuditLog.open(db, signer=signer) as log:
        await log.append(entry(0))
        conn = sqlite3.connect(db)  # a storage failure, made by SQLite itself
        conn.execute("CREATE TRIGGER test_failure BEFORE INSERT ON audit_records "
                     "WHEN NEW.operator_id = 'poison' "
                     "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
        conn.close()
        with capture_logs() as logs, pytest.raises(AuditError, match="disk on fire"):
            await log.append(entry(1, operator_id="poison"))
        assert [e["event"] for e in logs] == ["audit_write_failed"]
        assert (await log.append(entry(2))).seq == 2
    report = verify(db, signer.public_key)
    assert report.ok and report.records == 2


async def test_append_after_close_fails_and_close_is_idempotent(
    db: Path, signer: CheckpointSigner
) -> None:
    log = AuditLog.open(db, signer=signer)
    with pytest.raises(AuditError, match="new, not open"):
        await log.append(entry())
    async with log:
        await log.append(entry())
    await log.close()
    with pytest.raises(AuditError, match="closed, not open"):
        await log.append(entry())
    assert log.state == "closed"


async def test_closing_writes_what_is_queued(db: Path, signer: CheckpointSigner) -> None:
    async with AuditLog.open(db, signer=signer) as log:
        pending = [asyncio.create_task(log.append(entry(n))) for n in range(200)]
        await asyncio.sleep(0)  # let them queue; close must still write them all
    assert sorted(t.result().seq for t in pending) == list(range(1, 201))
    assert verify(db, signer.public_key).last_checkpoint_seq == 200


async def test_a_checkpoint_is_signed_after_the_interval(
    db: Path, signer: CheckpointSigner
) -> None:
    signed = asyncio.Event()
    config = AuditLogConfig(checkpoint_every=1000, checkpoint_interval=0.05)
    async with AuditLog.open(db, signer=signer, config=config,
                             on_checkpoint=lambda _: signed.set()) as log:
        await log.append(entry())
        async with asyncio.timeout(5):
            await signed.wait()
        assert verify(db, signer.public_key).last_checkpoint_seq == 1


def test_the_log_survives_sigkill_mid_write(db: Path, signer: CheckpointSigner) -> None:
    key_hex = signer.private_key.private_bytes(
        Encoding.Raw, PrivateFormat.Raw, NoEncryption()).hex()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reported: list[int] = []
    with (open(db.with_suffix(".stderr"), "w") as stderr,
          subprocess.Popen([sys.executable, str(CHILD), str(db), key_hex], stdout=subprocess.PIPE,
                           stderr=stderr, env=env, text=True) as child):
        assert child.stdout is not None
        try:
            for line in child.stdout:
                reported.append(int(line))
                if len(reported) >= 400:
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            reported.extend(int(line) for line in child.stdout)  # what it said before it died
            child.wait()
    assert child.returncode == -signal.SIGKILL
    assert len(reported) >= 400, db.with_suffix(".stderr").read_text()

    report = verify(db, signer.public_key)
    assert report.ok, report.problems
    assert max(reported) <= report.head_seq  # contiguous chain: every reported seq is there
    assert sorted(reported) == sorted(set(reported))
    assert report.last_checkpoint_seq is not None and report.last_checkpoint_seq >= 350

    # The core restarts on the same file and the chain goes on.
    async def restart() -> None:
        async with AuditLog.open(db, signer=signer) as log:
            record = await log.append(entry())
            assert record.seq == report.head_seq + 1 and record.prev_hash == report.head_hash
    asyncio.run(restart())
    assert verify(db, signer.public_key).ok


# Export and search -------------------------------------------------------------------------------


async def _three_periods(db: Path, signer: CheckpointSigner) -> tuple[datetime, datetime]:
    async with AuditLog.open(db, signer=signer) as log:
        for n in range(3):
            await log.append(entry(n))
        start = datetime.now(UTC)
        for n in range(3, 7):
            await log.append(entry(n, camera_ids=(f"cam-{n}", "cam;odd")))
        end = datetime.now(UTC)
        for n in range(7, 9):
            await log.append(entry(n))
    return start, end


async def test_export_csv_for_a_period(db: Path, signer: CheckpointSigner) -> None:
    start, end = await _three_periods(db, signer)
    text = export(db, start, end, "csv")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [row["seq"] for row in rows] == ["4", "5", "6", "7"]
    assert rows[0]["camera_ids"] == "cam-3;cam;odd"
    assert rows[0]["purpose"] == "화재 진압" and rows[0]["agency"] == "seoul-119"
    assert json.loads(rows[0]["details"]) == {"n": 3, "bytes_sent": 3072}
    assert rows[0]["period_start"] == "2026-03-01T09:00:00.000000+00:00"
    assert list(rows[0]) == ["seq", "at", "action", "operator_id", "agency", "source_address",
                             "camera_ids", "incident_id", "purpose", "legal_basis", "outcome",
                             "reason", "period_start", "period_end", "details", "prev_hash",
                             "hash"]
    assert len(list(csv.DictReader(io.StringIO(export(db, fmt="csv"))))) == 9
    assert export(db, end + timedelta(days=1), None, "csv").count("\n") == 1  # header only


async def test_export_json_for_a_period_rehashes(db: Path, signer: CheckpointSigner) -> None:
    start, end = await _three_periods(db, signer)
    items = json.loads(export(db, since=start, fmt="json"))
    assert [item["seq"] for item in items] == [4, 5, 6, 7, 8, 9]
    assert items[0]["camera_ids"] == ["cam-3", "cam;odd"]
    for item in items:  # a reviewer can check every hash without our code
        assert independent_hash(item) == item["hash"]
    assert json.loads(export(db, until=start, fmt="json"))[-1]["seq"] == 3
    assert json.loads(export(db, since=end + timedelta(days=1), fmt="json")) == []
    with pytest.raises(ValueError, match="unknown export format"):
        export(db, fmt="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone-aware"):
        export(db, since=datetime(2026, 1, 1))


async def test_search_filters(db: Path, signer: CheckpointSigner) -> None:
    start, end = await _three_periods(db, signer)
    seqs = lambda records: [r.seq for r in records]  # noqa: E731
    assert seqs(search(db)) == list(range(9, 0, -1))
    assert seqs(search(db, operator_id="op-1")) == [8, 5, 2]
    assert seqs(search(db, incident_id="inc-0")) == [9, 7, 5, 3, 1]
    assert seqs(search(db, camera_id="cam;odd")) == [7, 6, 5, 4]
    assert seqs(search(db, camera_id="cam-shared")) == [9, 8, 3, 2, 1]
    assert seqs(search(db, camera_id="cam-4")) == [5]  # seq 5 is entry(4): camera cam-4
    assert seqs(search(db, since=start, until=end)) == [7, 6, 5, 4]
    assert seqs(search(db, operator_id="op-0", camera_id="cam;odd", since=start)) == [7, 4]
    assert seqs(search(db, action="session.open", limit=2)) == [9, 8]
    assert seqs(search(db, limit=2, before_seq=8)) == [7, 6]
    assert search(db, operator_id="nobody") == []
    with pytest.raises(ValueError, match="limit"):
        search(db, limit=0)
    with pytest.raises(ValueError, match="unknown audit action"):
        search(db, action="session.opened")


# Canonical form ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
texts = st.text(max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action=st.sampled_from(AuditAction),
    operator_id=st.text(min_size=1, max_size=20),
    purpose=st.none() | texts,
    reason=st.none() | texts,
    camera_ids=st.lists(st.text(min_size=1, max_size=10), max_size=4),
    details=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    start=st.none() | st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=9))])),
)
def test_any_entry_round_trips_and_verifies(
    shared_db: Path, action: AuditAction, operator_id: str, purpose: str | None,
    reason: str | None, camera_ids: list[str], details: dict[str, Any], start: datetime | None,
) -> None:
    submitted = AuditEntry(action=action, operator_id=operator_id, purpose=purpose, reason=reason,
                           camera_ids=camera_ids, details=details,  # type: ignore[arg-type]
                           period_start=start)
    record = append_sync(shared_db, submitted)
    assert record.entry == submitted
    assert search(shared_db, limit=1) == [record]
    item = json.loads(export(shared_db, fmt="json"))[-1]
    assert independent_hash(item) == record.hash
    assert verify(shared_db).ok


@pytest.fixture(scope="module")
def shared_db() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory) / "roundtrip.sqlite3"


def test_signer_key_id_and_checkpoint_signature() -> None:
    key = Ed25519PrivateKey.generate()
    signer = CheckpointSigner(key)
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert signer.key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert "private_key" not in repr(signer)
    checkpoint = signer.sign(3, "ab" * 32, T0)
    assert checkpoint.is_signed_by(signer.public_key)
    assert not checkpoint.is_signed_by(CheckpointSigner.generate().public_key)


def test_append_sync_from_threads_never_forks(db: Path, signer: CheckpointSigner) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def writer(worker: int) -> None:
        for n in range(10):
            record = append_sync(db, entry(worker * 10 + n), signer=signer)
            with lock:
                results.append(record.seq)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 41))
    report = verify(db, signer.public_key)
    assert report.ok and report.unattested == 0
