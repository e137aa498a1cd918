"""Every command explains itself; user mistakes end in one line and a non-zero exit, no traceback."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from safetynet.cli import build_parser, main


def _all_commands(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
    """Every command path of the CLI, walked from the parser itself."""
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _all_commands(sub, [*prefix, name])
    return found


# "sim cameras" hands its options to the camera simulator's own parser (tested with it).
COMMANDS = [c for c in _all_commands(build_parser(), []) if c != ["sim", "cameras"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "safetynet")
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: safetynet")
    assert len(out.splitlines()) > 4


def test_every_command_has_a_description() -> None:
    parser = build_parser()
    assert len(COMMANDS) > 20
    for command in COMMANDS[1:]:
        sub = parser
        for name in command:
            sub = next(a for a in sub._actions
                       if isinstance(a, argparse._SubParsersAction)).choices[name]
        assert sub.description, f"safetynet {' '.join(command)} has no description"


def test_console_script_is_installed() -> None:
    result = subprocess.run([sys.executable, "-m", "safetynet", "--help"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0 and "demo" in result.stdout


def test_bad_agent_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "a.toml"
    config.write_text("[district]\nid = 'x'\n[[cameras]]\nid='c1'\nlat=100\nlon=0\nsource='sim:'\n")
    assert main(["agent", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lat 100 is out of range" in err and str(config) in err


def test_agent_without_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agent"]) == 2
    assert "--config FILE is required" in capsys.readouterr().err


def test_view_with_no_core_running_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    from safetynet.broker import free_port

    code = main(["view", "gangnam-001", "--core", f"127.0.0.1:{free_port()}", "--seconds", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "UNAVAILABLE" in err and "Traceback" not in err


def test_bad_addresses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["view", "x", "--core", "nohostport"]) == 2
    assert "--core: core address 'nohostport' is not HOST:PORT" in capsys.readouterr().err
    assert main(["view", "x", "--core", "127.0.0.1:1,,127.0.0.1:2"]) == 2
    assert "has an empty entry" in capsys.readouterr().err
    assert main(["view", "x", "--advertise", "eth0"]) == 2
    assert "is not an IP address" in capsys.readouterr().err


def test_sim_districts_writes_loadable_configs(tmp_path: Path) -> None:
    from edge_agent.config import AgentConfig

    assert main(["sim", "districts", "--out", str(tmp_path), "--broker", "127.0.0.1:1884"]) == 0
    configs = sorted(tmp_path.glob("*.toml"))
    assert [p.stem for p in configs] == ["gangnam", "mapo"]
    for path in configs:
        config = AgentConfig.from_toml(path)
        assert config.broker.port == 1884 and len(config.cameras) == 20


def test_the_core_takes_its_database_from_the_config_unless_db_is_given(tmp_path: Path) -> None:
    import argparse

    from safetynet.commands.core import core_config

    (tmp_path / "core.toml").write_text('database = "state/city.sqlite3"\n')
    args = argparse.Namespace(config=str(tmp_path / "core.toml"), db=None, listen=None,
                              http_listen=None, broker=None)
    assert core_config(args).database == (tmp_path / "state" / "city.sqlite3").resolve()
    args.db = str(tmp_path / "other.sqlite3")
    assert core_config(args).database == (tmp_path / "other.sqlite3").resolve()
