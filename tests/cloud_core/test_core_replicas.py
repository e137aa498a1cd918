"""Two cores on one PostgreSQL: one audit chain appended by both, one leader that signs, taken
over when the leader stops. (Each replica keeps its own SQLite registry: see docs/scale-out.md.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_core.audit import verify
from cloud_core.config import CoreConfig
from cloud_core.exceptions import DatabaseUnavailable
from cloud_core.server import CoreServer
from cloud_core.storage.settings import StorageSettings
from runtime.signing_keys import load_or_create_signing_key
from safetynet.postgres_server import ThrowawayPostgres
from tests.cloud_core.test_audit import entry


def replica(core_config: CoreConfig, tmp_path: Path, name: str, dsn: str) -> CoreConfig:
    folder = tmp_path / name
    folder.mkdir()
    checkpoint_key = tmp_path / "audit-checkpoint.key"  # the city's one checkpoint key, read only
    load_or_create_signing_key(checkpoint_key)
    return replace(core_config, database=folder / "core.sqlite3", client_id=f"core-{name}",
                   grant_key_file=tmp_path / "grant-signing.key",  # the city's one key
                   checkpoint_key_file=checkpoint_key, storage=StorageSettings(url=dsn))


async def test_two_replicas_append_one_chain_and_one_leads(
    core_config: CoreConfig, tmp_path: Path, pg_dsn: str,
) -> None:
    async with CoreServer(replica(core_config, tmp_path, "a", pg_dsn)) as a:
        async with CoreServer(replica(core_config, tmp_path, "b", pg_dsn)) as b:
            assert a.audit is not None and b.audit is not None
            assert a.leadership is not None and b.leadership is not None
            assert a.leadership.is_leader and not b.leadership.is_leader
            for n in range(0, 40, 2):
                await asyncio.gather(a.audit.append(entry(n)), b.audit.append(entry(n + 1)))
            assert await b.audit.checkpoint() is None  # a follower never signs
            await a.audit.checkpoint()  # None when its interval has signed the head already
            assert verify(pg_dsn).last_checkpoint_seq == 40
            await a.close()
            async with asyncio.timeout(5):
                await b.leadership.wait_leader()
            await b.audit.append(entry(40))
    report = verify(pg_dsn)
    assert report.ok and report.records == 41, report.problems
    assert report.last_checkpoint_seq == 41  # b signed the head on close, as the leader


async def test_a_replica_with_a_wrong_password_does_not_start(
    core_config: CoreConfig, tmp_path: Path, postgres: ThrowawayPostgres, pg_dsn: str,
) -> None:
    config = replica(core_config, tmp_path, "a", pg_dsn.replace(postgres.password, "wrong"))
    with pytest.raises(DatabaseUnavailable, match="password authentication failed"):
        async with CoreServer(config):
            pass
