"""The relay's config and identity: ``safetynet relay init`` writes what ``relay run`` reads, and
a bad config is refused naming the file and key; the core's ``[relays]`` likewise."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from cloud_core.config import CoreConfig
from cloud_core.exceptions import ConfigError as CoreConfigError
from edge_agent.exceptions import ConfigError
from edge_agent.relay_node import RelayConfig
from runtime.signing_keys import load_or_create_signing_key, write_public_key
from safetynet.cli import main


def test_relay_init_writes_a_config_relay_run_reads(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    grant_key = tmp_path / "grant-signing.pub"
    write_public_key(grant_key, load_or_create_signing_key(tmp_path / "grant-signing.key"))
    out = tmp_path / "relay"
    assert main(["relay", "init", "--id", "relay-1", "--out", str(out), "--broker",
                 "broker.city:8883", "--grant-key", str(grant_key)]) == 0
    config = RelayConfig.from_toml(out / "relay.toml")
    assert (config.relay_id, config.broker.host, config.broker.port) == ("relay-1", "broker.city", 8883)
    assert config.identity_key == (out / "relay-1.key").resolve()
    assert stat.S_IMODE(config.identity_key.stat().st_mode) == 0o600
    printed = capsys.readouterr().out
    assert f'relay-1 = "{(out / "relay-1.pub").resolve()}"' in printed
    assert "topic write safetynet/v1/relays/relay-1/status" in printed
    core = CoreConfig.from_mapping({"relays": {"relay-1": str(out / "relay-1.pub")}}, tmp_path)
    assert core.relay_keys == {"relay-1": (out / "relay-1.pub").resolve()}


@pytest.mark.parametrize(("text", "problem"), [
    ('[relay]\nid = "Relay 1"\nidentity_key = "k"\n[grants]\npublic_key = "g"\n',
     "relay.id 'Relay 1' is not a valid id"),
    ('[relay]\nid = "relay-1"\n[grants]\npublic_key = "g"\n',
     "relay.identity_key and grants.public_key must be file paths"),
    ('[relay]\nid = "relay-1"\nidentity_key = "k"\nmax_viewers = 0\n[grants]\npublic_key = "g"\n',
     "relay.max_viewers must be a whole number >= 1, got 0"),
    ('[relay]\nid = "relay-1"\nidentity_key = "k"\ncolour = 1\n[grants]\npublic_key = "g"\n',
     "relay: unknown key(s) colour"),
    ('[grants]\npublic_key = "g"\n', "[relay] is required"),
])
def test_a_bad_relay_config_is_refused_naming_the_key(tmp_path: Path, text: str,
                                                      problem: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(problem)) as caught:
        RelayConfig.from_toml(path)
    assert caught.value.path == str(path)


def test_the_core_refuses_a_bad_relays_table(tmp_path: Path) -> None:
    path = tmp_path / "core.toml"
    path.write_text('[relays]\n"Bad Id" = "relay.pub"\n')
    with pytest.raises(CoreConfigError, match="relays: relay id 'Bad Id' is not a valid id"):
        CoreConfig.from_toml(path)
    path.write_text('[relays]\nrelay-1 = 7\n')
    with pytest.raises(CoreConfigError, match=r"\[relays\] must map relay ids to public key files"):
        CoreConfig.from_toml(path)
