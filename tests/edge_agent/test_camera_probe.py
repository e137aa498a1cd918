"""Idle-camera probes: the RTSP DESCRIBE client against real RTSP, and the schedule with a fake."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from edge_agent.camera_probe import (
    CameraProber,
    ProbeFailed,
    ProbeResult,
    digest_authorization,
    parse_response,
    probe_rtsp,
    video_codec,
)
from edge_agent.camera_sources.rtsp import RtspTarget
from edge_agent.config import CameraConfig, RtspSettings
from simulators.rtsp_launcher import Fault
from tests.edge_agent.test_rtsp_source import (
    PASSWORD,
    USER,
    closed_port_url,
    needs_server,
    serve,
    silent_listener,
    with_credentials,
)

# --- the wire -------------------------------------------------------------------------------


def test_digest_answer_matches_rfc_2617() -> None:
    challenge = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                 'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    header = digest_authorization(challenge, "Mufasa", "Circle Of Life", "GET", "/dir/index.html",
                                  cnonce="0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in header
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in header and "nc=00000001" in header


def test_video_codec_is_named_as_ffmpeg_names_it() -> None:
    sdp = ("v=0\r\nm=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/16000\r\n"
           "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H265/90000\r\n")
    assert video_codec(sdp) == "hevc"
    assert video_codec("m=video 0 RTP/AVP 96\na=rtpmap:96 H264/90000\n") == "h264"
    assert video_codec("m=video 0 RTP/AVP 26\n") == "mjpeg"


# --- against real RTSP ----------------------------------------------------------------------


@needs_server
async def test_describe_tells_working_cameras_from_broken_ones_without_leaking_secrets() -> None:
    async with serve(("cam-a", "cam-b"), faults_at_start={"cam-b": Fault.REFUSE}) as server:
        url = server.urls["cam-a"]
        with capture_logs() as logs:
            ok = await probe_rtsp(RtspTarget.parse(with_credentials(url)), timeout=3)
            no_credentials = await probe_rtsp(RtspTarget.parse(url), timeout=3)
            wrong = await probe_rtsp(RtspTarget.parse(with_credentials(url, password="Wr0ng")), timeout=3)
            not_served = await probe_rtsp(
                RtspTarget.parse(with_credentials(server.urls["cam-b"])), timeout=3)
            refused = await probe_rtsp(RtspTarget.parse(closed_port_url()), timeout=3)
            with silent_listener() as hung_url:
                hung = await probe_rtsp(RtspTarget.parse(hung_url), timeout=0.5)
        assert (await server.status("cam-a")).clients == 0  # a probe holds no session
    assert ok == ProbeResult(True, codec="h264", seconds=ok.seconds)
    assert [r.reason for r in (no_credentials, wrong, not_served, refused, hung)] == \
        ["unauthorized", "unauthorized", "refused", "refused", "timeout"]
    assert "404" in not_served.detail
    everything = repr([ok, no_credentials, wrong, not_served, refused, hung, logs])
    assert PASSWORD not in everything and "Wr0ng" not in everything


@needs_server
async def test_a_camera_whose_codec_cannot_pass_through_is_offline_unless_transcoded() -> None:
    async with serve(codec="mjpeg") as server:
        target = RtspTarget.parse(with_credentials(server.urls["cam-a"]))
        rejected = await probe_rtsp(target, timeout=3)
        allowed = await probe_rtsp(target, timeout=3, transcode_allowed=True)
    assert (rejected.ok, rejected.reason, rejected.codec) == (False, "codec", "mjpeg")
    assert (allowed.ok, allowed.codec) == (True, "mjpeg")


# --- the schedule ---------------------------------------------------------------------------


class Progress:
    """Ticked by the fake probes as each starts: a test waits on it for a condition, never naps."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def tick(self) -> None:
        self._event.set()

    async def until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._event.clear()
            await self._event.wait()


def cameras(count: int) -> list[CameraConfig]:
    return [CameraConfig(f"cam-{i:04d}", f"Camera {i}", 37.5, 127.0,
                         f"rtsp://{USER}:{PASSWORD}@10.0.{i // 250}.{i % 250}/stream")
            for i in range(count)] + [CameraConfig("sim-1", "Simulated", 37.5, 127.0, "sim:")]


def test_probe_rate_stays_bounded_for_a_district_of_2700_cameras() -> None:
    async def never(*args: object, **kwargs: object) -> ProbeResult:
        raise AssertionError("not started")

    async def ignore(camera_id: str, result: ProbeResult) -> None:
        return None

    def prober(count: int) -> CameraProber:
        return CameraProber(cameras(count), RtspSettings(), is_idle=lambda c: True,
                            on_result=ignore, probe=never)

    district = prober(2700)
    assert district.cameras == 2700  # the sim: camera is not probed
    assert district.probes_per_second == pytest.approx(22.5)  # each camera every 120 s
    assert prober(10_000).probes_per_second == pytest.approx(25.0)  # the cap holds
    assert prober(40).probes_per_second == pytest.approx(1 / 3)


async def test_probes_are_spread_bounded_and_only_change_idle_cameras() -> None:
    in_flight, most_in_flight = 0, 0
    probed: collections.Counter[str] = collections.Counter()
    starts: list[str] = []
    applied: dict[str, ProbeResult] = {}
    watched = {"cam-0003"}            # pulled by a viewer: never probed
    becomes_watched = {"cam-0004"}    # a viewer arrives while the probe is under way
    progress = Progress()

    async def slow_probe(target: RtspTarget, *, timeout: float,
                         transcode_allowed: bool) -> ProbeResult:
        nonlocal in_flight, most_in_flight
        assert PASSWORD not in target.url
        camera_id = f"cam-{int(target.host.rsplit('.', 1)[1]):04d}"
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        probed[camera_id] += 1
        starts.append(camera_id)
        progress.tick()
        if camera_id in becomes_watched:
            watched.add(camera_id)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return ProbeResult(camera_id != "cam-0001", "" if camera_id != "cam-0001" else "refused")

    async def on_result(camera_id: str, result: ProbeResult) -> None:
        applied[camera_id] = result

    settings = RtspSettings(probe_interval_seconds=0.2, probes_per_second=200, probe_concurrency=3)
    async with CameraProber(cameras(10), settings, is_idle=lambda c: c not in watched,
                            on_result=on_result, probe=slow_probe) as prober:
        assert prober.spacing_seconds == pytest.approx(0.02)
        # Let every idle camera come round at least twice (a bounded wait on that, not a nap).
        async with asyncio.timeout(10):
            await progress.until(lambda: all(probed[f"cam-{i:04d}"] >= 2 for i in (0, 1, 2, 5, 9)))
        # Just probed, so its next turn in the cycle is ten slots away.
        urgent = next(c for c in reversed(starts) if c not in watched)
        prober.probe_soon(urgent)
        asked_at = len(starts)
        async with asyncio.timeout(2):
            await progress.until(lambda: len(starts) >= asked_at + 2)
        # Next free slot (the scheduler may hold one camera already picked), not its turn.
        assert urgent in starts[asked_at:asked_at + 2]
    assert most_in_flight <= 3
    assert "cam-0003" not in probed and "cam-0004" not in applied
    assert all(probed[f"cam-{i:04d}"] >= 2 for i in (0, 1, 2, 5, 9))
    assert applied["cam-0001"].reason == "refused" and applied["cam-0000"].ok


async def test_dead_cameras_do_not_stretch_the_probe_cycle() -> None:
    """30 % of cameras never answer (each probe waits its whole timeout): the cycle holds."""
    dead = {f"cam-{i:04d}" for i in range(0, 150, 3)} | {"cam-0001"}  # 51 of 150, about a third

    progress = Progress()

    async def probe(target: RtspTarget, *, timeout: float, transcode_allowed: bool) -> ProbeResult:
        progress.tick()
        camera_id = f"cam-{int(target.host.rsplit('.', 1)[1]):04d}"
        if camera_id in dead:
            await asyncio.sleep(timeout)
            return ProbeResult(False, "timeout")
        await asyncio.sleep(0.005)
        return ProbeResult(True)

    results: collections.Counter[bool] = collections.Counter()

    async def on_result(camera_id: str, result: ProbeResult) -> None:
        results[result.ok] += 1

    # 50 probes a second, 4 slots, 1 s timeout: without lending, dead cameras alone would need
    # 50 * 0.34 * 1 = 17 slots, and the cycle would stretch to about 4.5 s.
    settings = RtspSettings(probe_interval_seconds=3.0, probes_per_second=1000,
                            probe_concurrency=4, open_timeout_seconds=1.0)
    async with CameraProber(cameras(150), settings, is_idle=lambda c: True, on_result=on_result,
                            probe=probe, slow_after=0.05) as prober:
        async with asyncio.timeout(15):
            await progress.until(lambda: prober.cycles_completed >= 2)
        assert prober.last_cycle_seconds is not None
        assert prober.last_cycle_seconds < 3.0 * 1.15
        assert prober.slots_lent > 0
    assert results[False] >= 40 and results[True] >= 90


def test_an_answer_is_parsed_only_once_all_of_it_has_arrived() -> None:
    sdp = b"v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    answer = (b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Type: application/sdp\r\n"
              b"Content-Length: " + str(len(sdp)).encode() + b"\r\n\r\n" + sdp)
    assert parse_response(answer[:20]) is None
    assert parse_response(answer[:-5]) is None
    parsed = parse_response(answer + b"RTSP/1.0 ")
    assert parsed is not None
    response, used = parsed
    assert (response.status, response.phrase, response.body, used) == (200, "OK", sdp, len(answer))
    assert response.header("content-type") == ["application/sdp"]
    with pytest.raises(ProbeFailed, match="not RTSP"):
        parse_response(b"HTTP/1.1 200 OK\r\n\r\n")
    with pytest.raises(ProbeFailed, match="too long"):
        parse_response(b"RTSP/1.0 200 OK\r\n" + b"X: y\r\n" * 4000)


async def test_probes_due_together_start_together_at_the_cycle_rate() -> None:
    """Batched starts: far fewer wake-ups than probes, and the rate still that of the cycle."""
    starts: list[float] = []
    progress = Progress()

    async def probe(target: RtspTarget, *, timeout: float, transcode_allowed: bool) -> ProbeResult:
        starts.append(asyncio.get_running_loop().time())
        progress.tick()
        return ProbeResult(True)

    async def ignore(camera_id: str, result: ProbeResult) -> None:
        return None

    # 100 cameras every 2 s: 50 probes a second, batches of 0.04 s (2 s / 50): two per batch.
    settings = RtspSettings(probe_interval_seconds=2.0, probes_per_second=1000)
    async with CameraProber(cameras(100), settings, is_idle=lambda c: True, on_result=ignore,
                            probe=probe) as prober:
        async with asyncio.timeout(10):
            await progress.until(lambda: prober.cycles_completed >= 2)
        assert prober.last_cycle_seconds == pytest.approx(2.0, rel=0.15)
    wakes = len({round(t, 3) for t in starts})
    assert wakes < len(starts) * 0.75
