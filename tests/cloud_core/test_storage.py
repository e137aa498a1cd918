"""The storage seam against real engines: the audit log on SQLite and on PostgreSQL (a throwaway
cluster of the tests' own), one chain across processes, migrations, leadership by advisory lock."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from cloud_core.audit import (
    AuditAction,
    AuditLog,
    AuditLogConfig,
    CheckpointSigner,
    append_sync,
    export,
    search,
    verify,
)
from cloud_core.exceptions import AuditError, DatabaseUnavailable, SchemaTooNew
from cloud_core.storage.leader import AdvisoryLockLeader, SoleLeader, open_leadership
from cloud_core.storage.migrations import latest_version
from safetynet.postgres_server import ThrowawayPostgres, free_port
from tests.cloud_core.test_audit import T0, entry, independent_hash

CHILD = Path(__file__).with_name("storage_child.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    if request.param == "sqlite":
        return tmp_path / "audit.sqlite3"
    return str(request.getfixturevalue("pg_dsn"))


def sql(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


async def test_write_verify_search_export_on_either_backend(location: str | Path) -> None:
    signer = CheckpointSigner.generate()
    async with AuditLog.open(location, signer=signer,
                             config=AuditLogConfig(checkpoint_every=4)) as log:
        records = await asyncio.gather(*(log.append(entry(n)) for n in range(10)))
        assert sorted(r.seq for r in records) == list(range(1, 11))
        assert len(await log.search(camera_id="cam-3")) == 2
    append_sync(location, entry(10), signer=signer)
    report = verify(location, signer.public_key)
    assert report.ok, report.problems
    assert (report.records, report.last_checkpoint_seq, report.warnings) == (11, 11, ())
    assert [r.seq for r in search(location, operator_id="op-1")] == [11, 8, 5, 2]
    assert [r.seq for r in search(location, incident_id="inc-0", before_seq=5, limit=2)] == [3, 1]
    assert len(search(location, action=AuditAction.SESSION_OPEN, since=T0 - timedelta(days=1),
                      until=T0 + timedelta(days=3650))) == 11
    items = json.loads(export(location, fmt="json"))
    assert [independent_hash(item) for item in items] == [item["hash"] for item in items]
    csv_text = export(location, fmt="csv")
    assert csv_text.count("\r\n") == 12 and "cam-0;cam-shared" in csv_text


async def test_an_edit_on_postgres_is_detected_and_named(pg_dsn: str) -> None:
    signer = CheckpointSigner.generate()
    async with AuditLog.open(pg_dsn, signer=signer) as log:
        for n in range(5):
            await log.append(entry(n))
    sql(pg_dsn, "ALTER TABLE audit_records DISABLE TRIGGER USER",
        "UPDATE audit_records SET reason = 'nothing to see' WHERE seq = 3")
    report = verify(pg_dsn, signer.public_key)
    assert (report.broken_seq, report.problem) == (
        3, "hash does not match the record's contents: edited")
    assert any("audit_records_no_change is missing" in w for w in report.warnings)


@pytest.mark.parametrize("statement", [
    "UPDATE audit_records SET reason = 'x' WHERE seq = 1",
    "DELETE FROM audit_records WHERE seq = 2",
    "TRUNCATE audit_records",
    "DELETE FROM audit_checkpoints",
    "UPDATE audit_meta SET value = 'x'",
    "INSERT INTO audit_meta (name, value) VALUES ('format', 'x') "
    "ON CONFLICT (name) DO UPDATE SET value = 'x'",
    "INSERT INTO audit_records SELECT seq + 10, at, action, operator_id, agency, source_address, "
    "camera_ids, incident_id, purpose, legal_basis, outcome, reason, period_start, period_end, "
    "details, prev_hash, hash FROM audit_records WHERE seq = 1",
])
async def test_postgres_guards_refuse_changes_and_forks(pg_dsn: str, statement: str) -> None:
    async with AuditLog.open(pg_dsn, signer=CheckpointSigner.generate()) as log:
        for n in range(3):
            await log.append(entry(n))
    with pytest.raises(psycopg.Error, match=r"append-only|does not extend the chain head"):
        sql(pg_dsn, statement)
    assert verify(pg_dsn).ok


def _start_writers(dsn: str, count: int, names: list[str]) -> list[subprocess.Popen[str]]:
    children = [subprocess.Popen([sys.executable, str(CHILD), "append", dsn, str(count), name],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 cwd=REPO) for name in names]
    for child in children:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    return children


def test_two_processes_append_to_one_chain_without_a_fork(pg_dsn: str) -> None:
    children = _start_writers(pg_dsn, 200, ["replica-a", "replica-b"])
    seqs = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        seqs.append({int(s) for s in out.split()[1:]})
    assert not seqs[0] & seqs[1] and seqs[0] | seqs[1] == set(range(1, 401))
    report = verify(pg_dsn)
    assert report.ok and report.records == 400, report.problems
    writers = [r.entry.operator_id for r in reversed(search(pg_dsn, limit=400))]
    switches = sum(1 for a, b in itertools.pairwise(writers) if a != b)
    assert switches >= 2, "the two writers did not interleave"


def test_a_newer_schema_is_refused(pg_dsn: str) -> None:
    append_sync(pg_dsn, entry(0))
    sql(pg_dsn, f"INSERT INTO safetynet_schema_version (version, name) "
                f"VALUES ({latest_version() + 1}, 'from_the_future')")
    with pytest.raises(SchemaTooNew, match=r"newer than this core knows.*upgrade safetynet") as e:
        append_sync(pg_dsn, entry(1))
    assert e.value.found == latest_version() + 1
    with pytest.raises(SchemaTooNew):
        verify(pg_dsn)


def test_two_replicas_migrate_at_once_applying_each_file_once(pg_dsn: str) -> None:
    children = _start_writers(pg_dsn, 4, ["a", "b"])
    for child in children:
        child.communicate(timeout=60)
        assert child.returncode == 0
    with psycopg.connect(pg_dsn) as conn:
        rows = conn.execute("SELECT version FROM safetynet_schema_version").fetchall()
    assert rows == [(v,) for v in range(1, latest_version() + 1)]


async def test_a_wrong_password_is_a_clear_error_without_the_password(
    postgres: ThrowawayPostgres, pg_dsn: str,
) -> None:
    dsn = pg_dsn.replace(postgres.password, "hunter2-wrong")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="password authentication failed") as e:
        async with AuditLog.open(dsn):
            pass
    assert time.monotonic() - started < 5
    assert "hunter2" not in str(e.value) and postgres.password not in str(e.value)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP and never answers (a server that hangs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def test_a_dead_or_silent_server_fails_fast(silent_port: int) -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"cannot connect: .*Connection refused"):
        append_sync(f"postgresql://u:secret@127.0.0.1:{free_port()}/db", entry(0))
    assert time.monotonic() - started < 2
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match="timeout") as e:
        verify(f"postgresql://u:secret@127.0.0.1:{silent_port}/db?connect_timeout=1")
    assert time.monotonic() - started < 4 and "secret" not in str(e.value)


def test_cli_verifies_a_postgres_chain(pg_dsn: str) -> None:
    for n in range(3):
        append_sync(pg_dsn, entry(n), signer=CheckpointSigner.generate() if n == 0 else None)
    result = subprocess.run([sys.executable, "-m", "safetynet", "audit", "verify",
                             "--dsn", pg_dsn], capture_output=True, text=True, cwd=REPO,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: 3 records")


# Leadership ----------------------------------------------------------------------------------


async def test_sqlite_is_always_the_leader(tmp_path: Path) -> None:
    async with open_leadership(tmp_path / "audit.sqlite3") as leader:
        assert isinstance(leader, SoleLeader) and leader.is_leader


async def test_one_leader_and_the_other_takes_over_on_close(pg_dsn: str) -> None:
    async with AdvisoryLockLeader(pg_dsn, retry_interval=0.1) as first:
        assert first.is_leader
        second = AdvisoryLockLeader(pg_dsn, retry_interval=0.1)
        async with second:
            assert not second.is_leader
            await first.close()
            async with asyncio.timeout(5):
                await second.wait_leader()


def _read_until(child: subprocess.Popen[str], line: str, timeout: float) -> None:
    assert child.stdout is not None
    os.set_blocking(child.stdout.fileno(), True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = child.stdout.readline()
        if got == f"{line}\n":
            return
        assert got, f"child ended before printing {line!r}"
    raise AssertionError(f"no {line!r} within {timeout} s")


def test_a_follower_takes_over_within_seconds_after_sigkill(pg_dsn: str) -> None:
    argv = [sys.executable, str(CHILD), "lead", pg_dsn]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
    second = None
    try:
        _read_until(first, "leader", 30)
        second = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO)
        _read_until(second, "follower", 30)
        killed = time.monotonic()
        first.send_signal(signal.SIGKILL)
        _read_until(second, "leader", 5)
        assert time.monotonic() - killed < 5
    finally:
        for child in (first, second):
            if child is not None:
                child.kill()
                child.wait()
                assert child.stdout is not None
                child.stdout.close()


async def test_only_the_leader_signs_checkpoints(pg_dsn: str) -> None:
    signer = CheckpointSigner.generate()
    config = AuditLogConfig(checkpoint_every=2)
    async with AuditLog.open(pg_dsn, signer=signer, config=config,
                             may_checkpoint=lambda: False) as follower:
        for n in range(5):
            await follower.append(entry(n))
        assert await follower.checkpoint() is None
    assert verify(pg_dsn, signer.public_key).last_checkpoint_seq is None
    async with AuditLog.open(pg_dsn, signer=signer, config=config) as leader:
        # A leader attests the unsigned tail as it opens, so there is nothing left to sign.
        assert verify(pg_dsn, signer.public_key).last_checkpoint_seq == 5
        assert await leader.checkpoint() is None


def test_a_missing_audit_log_on_postgres_is_a_clear_error(pg_dsn: str) -> None:
    with pytest.raises(AuditError, match="holds no audit log"):
        verify(pg_dsn)
