"""The systemd units provisioning writes for agent, core and broker restart on failure."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from provisioning.agent_bundle import install_bundle, read_bundle
from provisioning.service_units import (
    AGENT_UNIT,
    BROKER_UNIT,
    CORE_UNIT,
    MOSQUITTO,
    agent_unit_text,
    broker_unit_text,
    core_unit_text,
)
from tests.provisioning.conftest import ProvisionedCity

EXPECTED_RESTART = {AGENT_UNIT: "5", CORE_UNIT: "2", BROKER_UNIT: "1"}


def _sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(text)
    return parser


def _written_units(provisioned: ProvisionedCity, tmp_path: Path) -> dict[str, str]:
    """Each unit as provisioning writes it: core by init, broker by `provision broker`,
    agent by `agent install` of a real bundle."""
    bundle = read_bundle(provisioned.bundle("alpha"))
    installed = install_bundle(bundle, tmp_path / "root", user="nobody-here",
                               executable="/opt/safetynet/.venv/bin/safetynet")
    return {CORE_UNIT: (provisioned.city.core_dir / CORE_UNIT).read_text(),
            BROKER_UNIT: (provisioned.broker_dir / BROKER_UNIT).read_text(),
            AGENT_UNIT: installed.unit.read_text()}


def test_every_unit_restarts_on_failure_and_gives_up_after_a_burst(
        provisioned: ProvisionedCity, tmp_path: Path) -> None:
    units = _written_units(provisioned, tmp_path)
    for name, text in units.items():
        unit = _sections(text)
        service = unit["Service"]
        assert service["Restart"] == "on-failure", name
        assert service["RestartSec"] == EXPECTED_RESTART[name], name
        assert unit["Unit"]["StartLimitIntervalSec"] == "300", name
        assert unit["Unit"]["StartLimitBurst"] == "10", name
        assert service["NoNewPrivileges"] == "true" and service["ProtectSystem"] == "strict"
        assert unit["Install"]["WantedBy"] == "multi-user.target"
    broker = _sections(units[BROKER_UNIT])["Service"]
    assert broker["ExecStart"] == f"{MOSQUITTO} -c {provisioned.broker_dir / 'safetynet.conf'}"
    assert broker["ExecReload"] == "/bin/kill -HUP $MAINPID"
    core = _sections(units[CORE_UNIT])["Service"]
    assert core["ExecStart"].endswith(" core --config /var/lib/safetynet/core/core.toml")
    assert core["ReadWritePaths"] == "/var/lib/safetynet/core"
    agent = _sections(units[AGENT_UNIT])["Service"]
    assert agent["ExecStart"].endswith(f"agent --config {tmp_path}/root/etc/safetynet/agent.toml")


def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """``systemd-analyze verify`` on each unit, with executables that exist on this machine;
    systemd only warns (exit 0) on a key or value it cannot parse, so its output must not
    mention the unit either."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    executable = str(Path(sys.executable).with_name("safetynet"))
    if not Path(executable).is_file():
        pytest.skip("the safetynet entry point is not installed beside this Python")
    if not Path(MOSQUITTO).is_file():
        pytest.skip(f"{MOSQUITTO} is not installed")
    units = {
        AGENT_UNIT: agent_unit_text("alpha", config=tmp_path / "agent.toml", state_dir=tmp_path,
                                    executable=executable, user="root"),
        CORE_UNIT: core_unit_text("Testville", core_dir=tmp_path, executable=executable,
                                  user="root"),
        BROKER_UNIT: broker_unit_text("Testville", config=tmp_path / "safetynet.conf",
                                      user="root"),
    }
    for name, text in units.items():
        (tmp_path / name).write_text(text)
        done = subprocess.run([analyze, "verify", f"./{name}"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, check=False)
        complaints = [line for line in (done.stdout + done.stderr).splitlines() if name in line]
        if done.returncode != 0 and "Failed to" in done.stderr and not complaints:
            pytest.skip(f"systemd-analyze cannot run here: {done.stderr.strip()[:200]}")
        assert done.returncode == 0 and not complaints, (name, done.stdout, done.stderr)
