"""What the README promises: ``safetynet demo`` runs the pilot, ``safetynet view`` shows a decoded
frame from each district, Ctrl-C stops it all cleanly."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.media


async def _run(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_demo_then_view_a_camera_of_each_district(tmp_path: Path) -> None:
    state = tmp_path / "state"
    demo = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "safetynet", "demo", "--state-dir", str(state), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert demo.stdout is not None
    output: list[str] = []
    try:
        async with asyncio.timeout(60):
            while "Ctrl-C stops everything" not in (line := (await demo.stdout.readline()).decode()):
                assert line, "demo exited early:\n" + "".join(output)
                output.append(line)
        info = json.loads((state / "demo.json").read_text())
        assert {d["district_id"] for d in info["districts"]} == {"gangnam", "mapo"}
        assert all(len(d["cameras"]) == 20 for d in info["districts"])
        assert len(info["cameras"]) == 40
        # The browser console (and WHEP) is served too, at the URL the demo prints.
        assert info["console"].startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as http, http.get(info["console"]) as page:
            assert page.status == 200 and "Safety Net" in await page.text()

        token_files = {o["name"]: o["token_file"] for o in info["operators"]}
        assert {o["agency"] for o in info["operators"]} >= {
            "police-112", "fire-119", "disaster-room", "vulnerable-support", "district:gangnam",
            "district:mapo"}
        for district in info["districts"]:
            camera = district["cameras"][0]
            snapshot = tmp_path / f"{camera}.png"
            token = token_files[f"{district['district_id']}-centre"]
            code, out, err = await _run("view", camera, "--core", info["core"], "--seconds", "0.5",
                                        "--json", "--snapshot", str(snapshot), "--token-file", token)
            assert code == 0, err
            report = json.loads(out)
            assert report["frames"] >= 1 and report["width"] == 640 and report["height"] == 360
            assert report["district_id"] == district["district_id"]
            assert snapshot.stat().st_size > 1000

        code, out, err = await _run("view", "gangnam-001", "--core", info["core"])
        assert code == 1
        assert "UNAUTHENTICATED" in err and "Traceback" not in err
        # 112 reports a robbery at Gangnam Station and watches the nearest camera through it.
        police = token_files["police-op"]
        code, out, err = await _run("incident", "report", "--type", "robbery", "--at",
                                    "37.4979,127.0276", "--core", info["core"], "--token-file",
                                    police, "--json")
        assert code == 0, err
        report = json.loads(out)
        assert report["cameras"][0]["camera_id"] == "gangnam-001"
        code, out, err = await _run("view", "gangnam-001", "--incident", report["incident_id"],
                                    "--core", info["core"], "--token-file", police, "--json",
                                    "--seconds", "0.2")
        assert code == 0, err
        assert json.loads(out)["frames"] >= 1
    finally:
        if demo.returncode is None:
            demo.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest = (await demo.stdout.read()).decode()
            await demo.wait()
    assert demo.returncode == 0, rest
    assert "demo stopped" in rest
    assert "Traceback" not in "".join(output) + rest
