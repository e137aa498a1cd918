"""The attacks run against the shared core, with its HTTP console on a free loopback port."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloud_core.config import CoreConfig


@pytest.fixture
def core_config(core_config: CoreConfig) -> CoreConfig:
    return replace(core_config, http_listen="127.0.0.1:0")
