"""Local-mode credentials issued into a district's bundle: hashes only, 0600, checked like every
other bundle file, and an agent config that serves local mode from them."""

from __future__ import annotations

import stat
import tarfile
from pathlib import Path

import pytest

from edge_agent.config import AgentConfig
from edge_agent.local_access import load_local_operators
from provisioning.agent_bundle import read_bundle
from provisioning.exceptions import BundleError
from runtime import local_credentials
from safetynet.cli import main
from tests.provisioning.conftest import ProvisionedCity, camera_csv


def test_a_local_operator_goes_into_the_next_bundle_as_a_hash(
        provisioned: ProvisionedCity, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    city = str(provisioned.city.root)
    assert main(["provision", "local-operator", "--district", "alpha", "--operator", "kim",
                 "--dir", city]) == 0
    credential = capsys.readouterr().out.strip()
    assert local_credentials.parse(credential).district_id == "alpha"
    assert main(["provision", "local-operator", "--district", "alpha", "--operator", "kim",
                 "--dir", city]) == 2, "an existing operator is not silently re-issued"
    assert "already has operator 'kim'" in capsys.readouterr().err
    csv = tmp_path / "alpha.csv"
    csv.write_text(camera_csv("alpha"))
    assert main(["provision", "district", "add", "alpha", "--name", "Alpha-gu", "--cameras",
                 str(csv), "--update", "--dir", city]) == 0

    folder = provisioned.bundle("alpha")
    held = folder / "local-operators.toml"
    assert stat.S_IMODE(held.stat().st_mode) == 0o600
    assert credential.rsplit(":", 1)[1] not in held.read_text()
    with tarfile.open(folder.with_name(folder.name + ".tar.gz")) as tar:
        assert tar.getmember(f"{folder.name}/local-operators.toml").mode == 0o600
    config = AgentConfig.from_toml(folder / "agent.toml")
    assert config.local is not None and config.local.credentials_file == held.resolve()
    operator = load_local_operators(held, "alpha")["kim"]
    assert local_credentials.secret_matches(local_credentials.parse(credential).secret,
                                            operator.secret_hash)
    assert read_bundle(folder).files["local-operators.toml"] == held.read_bytes()

    held.write_text(held.read_text().replace("operator", "supervisor"))
    with pytest.raises(BundleError, match=r"local-operators\.toml does not match the manifest"):
        read_bundle(folder)


def test_a_bundle_without_local_operators_has_no_local_mode(provisioned: ProvisionedCity) -> None:
    folder = provisioned.bundle("bravo")
    assert not (folder / "local-operators.toml").exists()
    assert AgentConfig.from_toml(folder / "agent.toml").local is None
    read_bundle(folder)
