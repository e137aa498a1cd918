"""Shared fixtures: a real Mosquitto per test on a free loopback port, the core on port 0,
agents in-process with small synthetic cameras, and a throwaway PostgreSQL cluster (one per
session, on a free loopback port, never the machine's own server) with a fresh database per
test. Nothing here reaches beyond loopback.

``core_database`` comes in two backends, ``sqlite`` and ``postgres``: a test that takes it runs
on both."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from cloud_core.config import CoreConfig
from cloud_core.server import CoreServer
from cloud_core.storage.base import Location
from cloud_core.storage.database import Database, open_database
from cloud_core.storage.settings import StorageSettings
from edge_agent.config import AgentConfig, CameraConfig
from runtime.logs import configure_logging
from runtime.mqtt_link import BrokerSettings
from runtime.webrtc import WebRtcSettings
from safetynet.broker import MosquittoBroker
from safetynet.postgres_server import ThrowawayPostgres
from simulators.facilities import write_facilities_csv
from simulators.pilot_districts import GANGNAM, MAPO, PilotDistrict

SMALL_SIM = "sim:?size=320x240&fps=15&gop=1&kbps=300"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Entry points under test configure logging; put it back so the next test starts clean."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info")  # as the entry points do: stderr, never stdout
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def mosquitto() -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker() as broker:
        yield broker


@pytest.fixture
def broker_settings(mosquitto: MosquittoBroker) -> BrokerSettings:
    return BrokerSettings(host=mosquitto.host, port=mosquitto.port, keepalive=5)


_databases = itertools.count(1)
BACKENDS = ("sqlite", "postgres")


@pytest.fixture(scope="session")
def postgres() -> Iterator[ThrowawayPostgres]:
    with ThrowawayPostgres() as cluster:
        yield cluster


@pytest.fixture
def pg_dsn(postgres: ThrowawayPostgres) -> str:
    """A DSN for an empty database of this test's own."""
    return postgres.create_database(f"test_{next(_databases)}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def core_database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Location:
    """Where the core's state lives: a fresh SQLite file, or a fresh PostgreSQL database."""
    if backend == "postgres":
        return str(request.getfixturevalue("pg_dsn"))
    return tmp_path / "core.sqlite3"


@pytest.fixture
def two_replicas(core_database: Location) -> Iterator[tuple[Database, Database]]:
    """Two replicas' own handles on one core database (each its connections, as two processes
    have)."""
    a, b = open_database(core_database), open_database(core_database)
    yield a, b
    a.close()
    b.close()


def make_core_config(tmp_path: Path, broker_settings: BrokerSettings,
                     storage: StorageSettings | None = None) -> CoreConfig:
    """A core on this test's broker: SQLite, or all its state on ``storage``."""
    return CoreConfig(database=tmp_path / "core.sqlite3", listen="127.0.0.1:0",
                      broker=broker_settings, answer_timeout_seconds=5.0,
                      facilities_file=write_facilities_csv(tmp_path / "facilities.csv"),
                      storage=storage)


@pytest.fixture
def core_config(tmp_path: Path, broker_settings: BrokerSettings) -> CoreConfig:
    """A core on this test's broker (SQLite; ``tests/integration`` runs it on both)."""
    return make_core_config(tmp_path, broker_settings)


@pytest.fixture
async def core(core_config: CoreConfig) -> AsyncIterator[CoreServer]:
    async with CoreServer(core_config) as server:
        await server.wait_connected()
        yield server


# One operator per agency and role the tests need: name -> (agency, role).
TEST_OPERATORS = {
    "gangnam-op": ("district:gangnam", "operator"),
    "mapo-op": ("district:mapo", "operator"),
    "police-op": ("police-112", "operator"),
    "police-sup": ("police-112", "supervisor"),
    "fire-op": ("fire-119", "operator"),
    "auditor": ("police-112", "auditor"),
}


@pytest.fixture
def tokens(core: CoreServer) -> dict[str, str]:
    """Bearer tokens of TEST_OPERATORS, created in the core's store."""
    assert core.access is not None
    return {name: core.access.operators.add(name, agency=agency, role=role,
                                            policy=core.access.policy)[1]
            for name, (agency, role) in TEST_OPERATORS.items()}


AgentConfigFactory = Callable[..., AgentConfig]


@pytest.fixture
def agent_config(broker_settings: BrokerSettings, core_config: CoreConfig) -> AgentConfigFactory:
    """``agent_config(district=GANGNAM, cameras=3, **overrides)``: a small config for tests."""

    def make(district: PilotDistrict = GANGNAM, cameras: int = 3, source: str = SMALL_SIM,
             **overrides: object) -> AgentConfig:
        config = AgentConfig(
            district_id=district.district_id, district_name=district.name,
            agent_id=f"{district.district_id}-agent", broker=broker_settings,
            webrtc=WebRtcSettings.loopback(),
            cameras=tuple(CameraConfig(c.camera_id, c.name, c.lat, c.lon, source)
                          for c in district.cameras[:cameras]),
            heartbeat_seconds=30, idle_close_seconds=1.0,
            grant_public_key=core_config.grant_public_key_path,
        )
        return replace(config, **overrides)  # type: ignore[arg-type]

    return make


__all__ = ["GANGNAM", "MAPO", "SMALL_SIM"]
