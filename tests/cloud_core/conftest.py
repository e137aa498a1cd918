"""PostgreSQL for the storage tests: one throwaway cluster per session on a free loopback port
(never the machine's own server), and a fresh database per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from safetynet.postgres_server import ThrowawayPostgres

_databases = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(postgres: ThrowawayPostgres) -> str:
    """A DSN for an empty database of this test's own."""
    return postgres.create_database(f"test_{next(_databases)}")
