"""The provision and agent-action commands explain themselves; revoke and re-enrol."""

from __future__ import annotations

import pytest

from safetynet.cli import main
from tests.provisioning.conftest import ProvisionedCity

COMMANDS = [["provision"], ["provision", "init"], ["provision", "district"],
            ["provision", "district", "add"], ["provision", "district", "revoke"],
            ["provision", "core"], ["provision", "core", "add"],
            ["provision", "core", "revoke"], ["provision", "core", "list"],
            ["provision", "broker"], ["agent", "install"], ["agent", "check"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: safetynet {' '.join(command)}") and len(out.splitlines()) > 4


def test_revoked_district_can_be_enrolled_again_with_a_new_certificate(
        provisioned: ProvisionedCity, capsys: pytest.CaptureFixture[str]) -> None:
    city, root = provisioned.city, str(provisioned.city.root)
    old = city.district("bravo")
    assert old is not None
    assert main(["provision", "district", "revoke", "bravo", "--dir", root]) == 0
    assert main(["provision", "district", "revoke", "bravo", "--dir", root]) == 2
    assert "was already revoked" in capsys.readouterr().err
    assert [r.serial for r in city.revocations()] == [old.serial]

    inventory = city.district_dir("bravo") / "cameras.csv"
    assert main(["provision", "district", "add", "bravo", "--name", "Bravo-gu", "--cameras",
                 str(inventory), "--dir", root]) == 2
    assert "pass --update" in capsys.readouterr().err
    assert main(["provision", "district", "add", "bravo", "--name", "Bravo-gu", "--cameras",
                 str(inventory), "--update", "--dir", root]) == 0
    assert "new certificate agent:bravo" in capsys.readouterr().out
    new = city.district("bravo")
    assert new is not None and not new.revoked and new.serial != old.serial
    assert new.previous_serials == (old.serial,)
    assert "user agent:bravo" in (provisioned.broker_dir / "acl").read_text()
    assert [r.serial for r in city.revocations()] == [old.serial]  # the old key stays revoked

    assert main(["provision", "district", "list", "--dir", root]) == 0
    listing = capsys.readouterr().out
    assert "alpha" in listing and "bravo" in listing and "REVOKED" not in listing
