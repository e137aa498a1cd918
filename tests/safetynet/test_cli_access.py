"""The access-control command lines: operators on the database, offline audit verification."""

from __future__ import annotations

import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from cloud_core.audit import AuditAction, AuditEntry, CheckpointSigner, append_sync
from cloud_core.grants import load_or_create_signing_key, write_public_key
from cloud_core.registry import Registry
from safetynet.cli import main


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "core.sqlite3"
    Registry(path).close()
    return path


def test_operator_add_list_disable(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "fire.token"
    assert main(["operator", "add", "kim-119", "--agency", "fire-119", "--db", str(db),
                 "--token-out", str(token_file)]) == 0
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert token.startswith("snt_") and len(token) > 40
    assert token not in capsys.readouterr().out
    # Only the hash is stored.
    with sqlite3.connect(db) as conn:
        assert token not in " ".join(str(v) for row in conn.execute("SELECT * FROM operators") for v in row)

    assert main(["operator", "add", "kim-119", "--agency", "fire-119", "--db", str(db)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["operator", "add", "lee", "--agency", "fire-911", "--db", str(db)]) == 2
    assert "unknown agency 'fire-911'" in capsys.readouterr().err

    assert main(["operator", "list", "--db", str(db)]) == 0
    assert "kim-119" in capsys.readouterr().out
    assert main(["operator", "disable", "kim-119", "--db", str(db)]) == 0
    assert main(["operator", "list", "--db", str(db), "--json"]) == 0
    assert '"enabled": false' in capsys.readouterr().out
    # Operator changes are on the audit record.
    assert main(["audit", "export", "--db", str(db.parent / "audit.sqlite3"), "--format", "json"]) == 0
    exported = capsys.readouterr().out
    assert "operator.add" in exported and "operator.disable" in exported


def _log_with_records(db: Path, count: int) -> Path:
    key_file = db.parent / "grant-signing.key"
    key = load_or_create_signing_key(key_file)
    write_public_key(db.parent / "grant-signing.pub", key.public_key())
    signer = CheckpointSigner(key)
    for i in range(count):
        append_sync(db, AuditEntry(action=AuditAction.ACCESS_GRANT, operator_id=f"op-{i}",
                                   camera_ids=("c-1",)), signer=signer)
    return key_file


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder", "truncate"])
def test_audit_verify_on_a_copy_names_the_first_broken_record(
        db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], tamper: str) -> None:
    _log_with_records(db, 6)
    assert main(["audit", "verify", "--db", str(db)]) == 0
    assert capsys.readouterr().out.startswith("OK: 6 records")

    copy = tmp_path / "copy" / "core.sqlite3"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    shutil.copy(db.parent / "grant-signing.pub", copy.parent / "grant-signing.pub")
    with sqlite3.connect(copy) as conn:
        # An attacker with the file can drop the triggers first.
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        if tamper == "edit":
            conn.execute("UPDATE audit_records SET operator_id='someone-else' WHERE seq=3")
        elif tamper == "delete":
            conn.execute("DELETE FROM audit_records WHERE seq=3")
        elif tamper == "reorder":
            rows = {r[0]: r[1:] for r in conn.execute("SELECT seq, operator_id FROM audit_records")}
            conn.execute("UPDATE audit_records SET operator_id=? WHERE seq=3", rows[4])
            conn.execute("UPDATE audit_records SET operator_id=? WHERE seq=4", rows[3])
        else:
            conn.execute("DELETE FROM audit_records WHERE seq >= 5")
    assert main(["audit", "verify", "--db", str(copy)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("BROKEN at record")
    expected = {"edit": 3, "delete": 3, "reorder": 3, "truncate": 5}[tamper]
    assert f"BROKEN at record {expected}:" in out


def test_audit_verify_of_a_file_that_is_no_audit_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all")
    assert main(["audit", "verify", "--db", str(junk)]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert main(["audit", "verify", "--db", str(tmp_path / "missing.sqlite3")]) == 2
