"""``safetynet dispatch`` and ``safetynet evidence preserve`` against a real core (gRPC, Mosquitto,
an agent with cameras): what a 112 room types under time pressure, and the one-line errors it gets
for a wrong incident, officer or camera, with nothing changed by a refused command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from cloud_core import audit as audit_log
from cloud_core.server import CoreServer
from edge_agent.agent import EdgeAgent
from safetynet.cli import main
from tests.conftest import GANGNAM, AgentConfigFactory
from tests.integration.test_evidence import evidence_settings

#: A structlog line of the in-process core: an ISO timestamp, then the level.
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ \[")

pytestmark = pytest.mark.media

GANGNAM_STATION = (37.49795, 127.02760)
STATION_AT = f"{GANGNAM_STATION[0]},{GANGNAM_STATION[1]}"


class Cli:
    """``safetynet …`` as a user runs it (in a thread: the command runs its own event loop)."""

    def __init__(self, core: CoreServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
        self._core = core
        self._tmp = tmp_path
        self._capsys = capsys

    def token_file(self, name: str, token: str) -> Path:
        path = self._tmp / f"{name}.token"
        path.write_text(token)
        return path

    async def run(self, token: Path, *argv: str) -> tuple[int, str, str]:
        self._capsys.readouterr()
        code = await asyncio.to_thread(main, [*argv, "--core", self._core.address,
                                              "--token-file", str(token)])
        out, err = self._capsys.readouterr()
        return code, out, err


async def test_the_112_room_dispatches_pushes_lists_and_recalls_from_the_command_line(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    access = core.access
    assert access is not None
    cli = Cli(core, tmp_path, capsys)
    room = cli.token_file("room", tokens["police-op"])
    fire = cli.token_file("fire", tokens["fire-op"])
    for officer in ("officer-park", "officer-lee"):
        access.operators.add(officer, agency="police-112", role="field", policy=access.policy)
    access.operators.add("fire-crew", agency="fire-119", role="field", policy=access.policy)
    async with EdgeAgent(agent_config(GANGNAM, cameras=3)):
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 3, 10)

        # The help's own example: --service 112-dispatch names 112 emergency dispatch.
        code, out, err = await cli.run(room, "incident", "report", "--type", "robbery",
                                       "--at", STATION_AT, "--service",
                                       "112-dispatch", "--ref", "112-2026-7001",
                                       "--radius", "2500", "--json")
        assert code == 0, err
        incident = json.loads(out)
        assert incident["service"] == "112-emergency-dispatch"
        assert [c["camera_id"] for c in incident["cameras"]] == ["gangnam-001", "gangnam-002"]
        incident_id = incident["incident_id"]
        code, _, err = await cli.run(room, "incident", "report", "--type", "robbery",
                                     "--at", STATION_AT, "--service", "112")
        assert code == 1 and "could be any of 112-emergency-dispatch, 112-emergency-video" in err

        code, out, err = await cli.run(room, "dispatch", "assign", incident_id,
                                       "--officer", "officer-park", "--officer", "officer-lee")
        assert code == 0, err
        assert "officers now: officer-park, officer-lee" in out

        code, out, err = await cli.run(room, "dispatch", "still", incident_id,
                                       "--camera", "gangnam-001", "--json")
        assert code == 0, err
        still = json.loads(out)
        assert still["kind"] == "still" and still["officers"] == ["officer-park", "officer-lee"]
        room_caller = access.authenticate(tokens["police-op"])
        jpeg = access.dispatch_still(room_caller, still["push_id"])
        assert hashlib.sha256(jpeg).hexdigest() == still["sha256"] and still["bytes"] == len(jpeg)
        code, out, err = await cli.run(room, "dispatch", "handoff", incident_id,
                                       "--camera", "gangnam-002")
        assert code == 0, err
        assert "camera gangnam-002 handed off" in out and "to officer-park, officer-lee" in out

        code, out, _ = await cli.run(room, "dispatch", "show", incident_id)
        assert code == 0
        assert f"incident {incident_id}: officers dispatched: officer-park, officer-lee" in out
        assert f"sha256 {still['sha256']}" in out and "camera handed off" in out
        code, out, _ = await cli.run(room, "dispatch", "list", "--json")
        assert code == 0
        [listed] = json.loads(out)
        assert listed["incident_id"] == incident_id and len(listed["pushes"]) == 2

        await refusals(cli, core, room, fire, incident_id)

        code, out, err = await cli.run(room, "dispatch", "recall", incident_id,
                                       "--officer", "officer-lee")
        assert code == 0, err
        assert "officers left: officer-park" in out
        code, out, _ = await cli.run(room, "dispatch", "recall", incident_id, "--all")
        assert code == 0 and "officers left: none" in out
        code, _, err = await cli.run(room, "dispatch", "recall", incident_id, "--all")
        assert code == 1 and f"no officer is dispatched to {incident_id}" in err
    actions = [r.entry.action.value for r in audit_log.search(
        core.config.audit_database, incident_id=incident_id, limit=100)]
    assert actions.count("dispatch.assign") == 2 and actions.count("dispatch.unassign") == 2


async def refusals(cli: Cli, core: CoreServer, room: Path, fire: Path, incident_id: str) -> None:
    """Each mistake: exit 1, one line naming it, no traceback, nothing stored changed."""
    assert core.access is not None
    before = core.access.incidents.dispatch.pushes(incident_id)
    far = "gangnam-003"   # 2.6 km away, the grant reaches 2.5 km
    cases = [
        (room, ["dispatch", "assign", "INC-nope", "--officer", "officer-park"],
         "NOT_FOUND", "INC-nope"),
        (room, ["dispatch", "assign", incident_id, "--officer", "officer-nobody"],
         "INVALID_ARGUMENT", "'officer-nobody' is not an enabled field officer"),
        (room, ["dispatch", "assign", incident_id, "--officer", "fire-crew"],
         "INVALID_ARGUMENT", "fire-crew of fire-119 is not admitted"),
        (room, ["dispatch", "still", incident_id, "--camera", far],
         "PERMISSION_DENIED", f"camera {far} is not within incident"),
        (room, ["dispatch", "handoff", incident_id, "--camera", "no-such-camera"],
         "PERMISSION_DENIED", "camera no-such-camera is not within incident"),
        (fire, ["dispatch", "still", incident_id, "--camera", "gangnam-001"],
         "NOT_FOUND", incident_id),
        (room, ["dispatch", "recall", incident_id, "--officer", "officer-nobody"],
         "INVALID_ARGUMENT", "officer officer-nobody is not assigned"),
    ]
    for token, argv, status, words in cases:
        code, out, err = await cli.run(token, *argv)
        assert (code, out) == (1, ""), (argv, code, out, err)
        # The core under test runs in this process: its own log lines (a slow loop under load)
        # may land in the same stderr; what the command printed is the one line that is not one.
        said = [line for line in err.splitlines() if not LOG_LINE.match(line)]
        assert len(said) == 1 and said[0].startswith("safetynet: "), err
        assert status in err and words in err, (argv, err)
        assert "Traceback" not in err
    assert core.access.incidents.dispatch.pushes(incident_id) == before
    assert core.access.incidents.dispatch.officers(incident_id) == ["officer-park", "officer-lee"]
    code, _, err = await cli.run(room, "dispatch", "assign", incident_id, "--officer", " ")
    assert code == 2 and "--officer must name" in err


async def test_evidence_preserve_from_the_command_line_starts_a_clip_or_says_why_not(
        core: CoreServer, tokens: dict[str, str], agent_config: AgentConfigFactory,
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = Cli(core, tmp_path, capsys)
    room = cli.token_file("room", tokens["police-op"])
    config = replace(agent_config(GANGNAM, cameras=2),
                     evidence=evidence_settings(tmp_path, max_clip_seconds=20.0))
    async with EdgeAgent(config):
        await core.wait_until(lambda r: len(r.list_cameras(status="online")) == 2, 10)
        code, out, err = await cli.run(room, "incident", "report", "--type", "robbery",
                                       "--at", STATION_AT, "--json")
        assert code == 0, err
        incident_id = json.loads(out)["incident_id"]
        code, out, err = await cli.run(room, "evidence", "preserve", "--incident", incident_id,
                                       "--camera", "gangnam-001", "--max-seconds", "5",
                                       "--json")
        assert code == 0, err
        [clip] = json.loads(out)
        assert clip["camera_id"] == "gangnam-001" and clip["state"] == "recording"
        assert core.evidence is not None
        assert core.evidence.clip(clip["clip_id"]) is not None

        code, out, err = await cli.run(room, "evidence", "preserve", "--incident", incident_id,
                                       "--camera", "gangnam-001", "--max-seconds", "60")
        assert (code, out) == (1, ""), err
        assert "a clip lasts at most 20 s at this agent, asked 60 s (INVALID_ARGUMENT)" in err
        assert [c.clip_id for c in core.evidence.clips(incident_id)] == [clip["clip_id"]]
