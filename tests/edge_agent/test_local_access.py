"""Local-mode access at the agent without a broker: credentials, decisions and the journal."""

from __future__ import annotations

import itertools
import os
from datetime import timedelta
from pathlib import Path

import pytest

from edge_agent.exceptions import ConfigError, LocalAccessRefused
from edge_agent.local_access import CoreReachability, LocalAccess, load_local_operators
from edge_agent.local_journal import LocalJournal
from provisioning.local_operators import add_local_operator
from runtime.journal_chain import GENESIS


def local_access(tmp_path: Path, *, link_up: bool = False) -> tuple[LocalAccess, dict[str, str]]:
    path = tmp_path / "local-operators.toml"
    credentials = {role: add_local_operator(path, "gangnam", f"{role}-1", role)
                   for role in ("operator", "supervisor")}
    journal = LocalJournal(tmp_path / "journal.sqlite3", "gangnam")
    access = LocalAccess(district_id="gangnam", operators=load_local_operators(path, "gangnam"),
                         camera_ids=["gangnam-001"], journal=journal,
                         core=CoreReachability(lambda: link_up), session=timedelta(minutes=5))
    return access, credentials


def test_credentials_keep_only_scrypt_hashes_in_a_0600_file(tmp_path: Path) -> None:
    _, credentials = local_access(tmp_path)
    path = tmp_path / "local-operators.toml"
    text = path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600
    assert "scrypt$" in text and credentials["operator"].rsplit(":", 1)[1] not in text
    assert (tmp_path / "journal.sqlite3").stat().st_mode & 0o777 == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_local_operators(path, "gangnam")
    os.chmod(path, 0o600)
    with pytest.raises(ConfigError, match="is for district 'gangnam', not 'mapo'"):
        load_local_operators(path, "mapo")


@pytest.mark.parametrize(("credential", "status", "kind"), [
    ("not a credential", 400, "bad_credential"),
    ("sn1:gangnam:nobody:c2VjcmV0", 401, "bad_credential"),
    ("sn1:mapo:operator-1:c2VjcmV0", 403, "wrong_district"),
])
async def test_a_bad_sign_in_is_refused_clearly_and_journaled(
        tmp_path: Path, credential: str, status: int, kind: str) -> None:
    access, _ = local_access(tmp_path)
    with pytest.raises(LocalAccessRefused) as refused:
        await access.sign_in(credential, "127.0.0.1")
    assert (refused.value.status, refused.value.kind) == (status, kind)
    [entry] = access.journal.after(0)
    assert (entry.action, entry.outcome, entry.prev_hash) == ("local.sign_in", "denied", GENESIS)
    assert credential.rsplit(":", 1)[-1] not in repr(entry), "no secret in the journal"


async def test_the_core_is_reachable_while_any_replica_says_it_is_online(tmp_path: Path) -> None:
    access, _ = local_access(tmp_path, link_up=True)
    assert not access.core.reachable  # no replica heard from yet
    await access.core.core_status(online=True, replica="core-a")
    await access.core.core_status(online=True, replica="core-b")
    await access.core.core_status(online=False, replica="core-a")  # a's last will
    assert access.core.reachable, "one replica's will must not send the district local"
    await access.core.core_status(online=False, replica="core-b")
    assert not access.core.reachable
    await access.core.core_status(online=True, replica="core-a")
    assert access.core.reachable


async def test_views_are_local_only_while_the_core_is_unreachable(tmp_path: Path) -> None:
    access, credentials = local_access(tmp_path, link_up=True)
    token = (await access.sign_in(credentials["supervisor"], "127.0.0.1")).token
    await access.core.core_status(online=True)
    with pytest.raises(LocalAccessRefused, match="core is reachable"):
        access.open_view(token, "gangnam-001", "127.0.0.1")
    await access.core.core_status(online=False)
    with pytest.raises(LocalAccessRefused, match="not in district 'gangnam'") as unknown:
        access.open_view(token, "mapo-001", "127.0.0.1")
    assert unknown.value.status == 404
    view = access.open_view(token, "gangnam-001", "127.0.0.1")
    access.view_ended(view.session_id, "closed", 2.0, 100)
    with pytest.raises(LocalAccessRefused) as stale:
        access.open_view("no-such-token", "gangnam-001", "127.0.0.1")
    assert stale.value.status == 401
    actions = [(e.action, e.outcome) for e in access.journal.after(0)]
    assert actions == [("local.sign_in", "ok"), ("local.view", "denied"), ("local.view", "denied"),
                       ("local.view", "ok"), ("local.view_end", "ok")]
    records = access.journal.after(0)
    assert all(r.hash == r.computed_hash() for r in records)
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
