"""One bundle per district, and `safetynet agent install` putting it in place with its modes."""

from __future__ import annotations

import stat
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from edge_agent.config import AgentConfig
from provisioning.certificate_authority import common_name
from safetynet.cli import main
from tests.provisioning.conftest import ProvisionedCity, camera_csv

FILES = {"agent.toml", "cameras.csv", "grant-public.pem", "tls/ca.crt", "tls/agent.crt",
         "tls/agent.key", "safetynet-agent.service", "INSTALL.txt", "MANIFEST.json"}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_district_add_writes_one_bundle_as_folder_and_tarball(
        provisioned: ProvisionedCity, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "charlie.csv"
    csv.write_text(camera_csv("charlie", count=4))
    assert main(["provision", "district", "add", "charlie", "--name", "Charlie-gu", "--cameras",
                 str(csv), "--valid-days", "90", "--dir", str(provisioned.city.root)]) == 0
    out = capsys.readouterr().out
    assert "district charlie (Charlie-gu): 4 cameras, new certificate agent:charlie" in out
    assert "reload mosquitto" in out

    folder = provisioned.bundle("charlie")
    assert {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} == FILES
    assert _mode(folder / "tls/agent.key") == 0o600 and _mode(folder / "cameras.csv") == 0o600
    tarball = folder.with_name(folder.name + ".tar.gz")
    assert _mode(tarball) == 0o600
    with tarfile.open(tarball) as tar:
        members = {m.name.removeprefix(f"{folder.name}/"): m for m in tar.getmembers()}
    assert set(members) == FILES and members["tls/agent.key"].mode == 0o600

    certificate = x509.load_pem_x509_certificate((folder / "tls/agent.crt").read_bytes())
    ca = x509.load_pem_x509_certificate(provisioned.city.ca_cert.read_bytes())
    certificate.verify_directly_issued_by(ca)
    assert common_name(certificate) == "agent:charlie"
    assert "district charlie" in certificate.subject.rfc4514_string()
    lifetime = certificate.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=89) < lifetime <= timedelta(days=90)

    config = AgentConfig.from_toml(folder / "agent.toml")
    assert config.district_id == "charlie" and [c.camera_id for c in config.cameras] == [
        "charlie-001", "charlie-002", "charlie-003", "charlie-004"]
    assert config.broker.uses_tls and config.broker.port == provisioned.broker_port
    assert config.broker.cert_file == (folder / "tls/agent.crt").resolve()
    assert config.core_ca_file == (folder / "tls/ca.crt").resolve()
    assert config.grant_public_key is not None
    assert config.grant_public_key.read_bytes() == provisioned.city.grant_public_key.read_bytes()
    assert "user agent:charlie" in (provisioned.broker_dir / "acl").read_text()


def test_agent_install_puts_files_in_place_and_prints_the_systemd_steps(
        provisioned: ProvisionedCity, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tmp_path / "root"
    tarball = provisioned.city.bundles_dir / "safetynet-agent-alpha.tar.gz"
    assert main(["agent", "install", str(tarball), "--prefix", str(prefix)]) == 0
    out = capsys.readouterr().out
    etc = prefix / "etc/safetynet"
    for step in (f"safetynet agent check --config {etc / 'agent.toml'}",
                 "systemctl daemon-reload", "systemctl enable --now safetynet-agent"):
        assert step in out
    modes = {p.relative_to(etc).as_posix(): _mode(p) for p in etc.rglob("*")}
    assert modes == {"agent.toml": 0o640, "cameras.csv": 0o600, "grant-public.pem": 0o644,
                     "tls": 0o750, "tls/ca.crt": 0o644, "tls/agent.crt": 0o644,
                     "tls/agent.key": 0o600, "INSTALL.txt": 0o644, "MANIFEST.json": 0o644}
    assert _mode(etc) == 0o750 and _mode(prefix / "var/lib/safetynet") == 0o750
    unit = (prefix / "etc/systemd/system/safetynet-agent.service").read_text()
    assert f"agent --config {etc / 'agent.toml'}" in unit and "User=safetynet" in unit
    config = AgentConfig.from_toml(etc / "agent.toml")
    assert config.district_id == "alpha" and config.broker.key_file == etc / "tls/agent.key"
    assert len(config.cameras) == 3

    # Another district's bundle does not silently replace this one.
    bravo = provisioned.bundle("bravo")
    assert main(["agent", "install", str(bravo), "--prefix", str(prefix)]) == 1
    assert "holds the agent of district alpha, not bravo; pass --force" in capsys.readouterr().err


def test_an_altered_bundle_is_refused(provisioned: ProvisionedCity, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    folder = provisioned.bundle("alpha")
    with (folder / "cameras.csv").open("a") as f:
        f.write("alpha-099,Sneaky,37.5,127.0,rtsp://10.6.6.6/x,fixed\n")
    assert main(["agent", "install", str(folder), "--prefix", str(tmp_path / "root")]) == 1
    assert "cameras.csv does not match the manifest" in capsys.readouterr().err
    assert not (tmp_path / "root").exists()
