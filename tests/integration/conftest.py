"""The integration suite runs on both of the core's storage engines: every test that takes
``core_config`` (so ``core`` and ``tokens`` too) runs once on SQLite and once with all the
core's state on PostgreSQL (a fresh database on the session's throwaway cluster).

``@pytest.mark.one_backend`` keeps a test on SQLite only: one whose subject is not the core's
storage and that starts cores of its own (the broker cluster's failover, a restarted core that
must start empty, the replicas' failover test, which brings its own PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_core.config import CoreConfig
from cloud_core.storage.settings import StorageSettings
from runtime.mqtt_link import BrokerSettings
from tests.conftest import BACKENDS, make_core_config


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "storage_backend" in metafunc.fixturenames:
        single = metafunc.definition.get_closest_marker("one_backend") is not None
        metafunc.parametrize("storage_backend", ("sqlite",) if single else BACKENDS)


@pytest.fixture
def core_config(storage_backend: str, request: pytest.FixtureRequest, tmp_path: Path,
                broker_settings: BrokerSettings) -> CoreConfig:
    storage = (StorageSettings(url=str(request.getfixturevalue("pg_dsn")))
               if storage_backend == "postgres" else None)
    return make_core_config(tmp_path, broker_settings, storage)
