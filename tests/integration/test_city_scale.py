"""The core at city scale (all 25 districts, fewer cameras each), with a real Mosquitto.

Agents are stood in for by plain MQTT clients publishing what an agent publishes on (re)connecting
(its retained online status and its retained snapshot, the heartbeat), all at once, as after a
city-wide reconnect; the first round sends every camera's own status message as well.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import aiohttp
import aiomqtt
import grpc
import pytest

from cloud_core.config import CoreConfig
from cloud_core.page_token import MAX_PAGE_SIZE
from cloud_core.server import CoreServer
from protos import topics
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.mqtt_link import BrokerSettings
from simulators.city import CityCamera, district_cameras, districts

CITY = districts(total=25 * 200)
CAMERAS = {d.district_id: district_cameras(d) for d in CITY}
ALL_IDS = sorted(c.camera_id for cams in CAMERAS.values() for c in cams)


def _status(camera: CityCamera, online: bool) -> bytes:
    return mqtt_pb2.CameraStatus(
        state=mqtt_pb2.CAMERA_STATE_ONLINE if online else mqtt_pb2.CAMERA_STATE_OFFLINE,
        camera=mqtt_pb2.CameraDescriptor(camera_id=camera.camera_id, district_id=camera.district_id,
                                         name=camera.name, lat=camera.lat, lon=camera.lon),
    ).SerializeToString()


def expected_online(camera_id: str, round_: int) -> bool:
    return (hash(camera_id) + round_) % 3 != 0


async def publish_district(settings: BrokerSettings, district: str, round_: int, *,
                           each_camera: bool = False) -> None:
    """What an agent publishes on (re)connecting: online, then its snapshot (both retained);
    ``each_camera``: every camera's own status message too (changes, not retained)."""
    async with aiomqtt.Client(settings.host, settings.port, identifier=f"{district}-agent",
                              max_inflight_messages=200) as client:
        await client.publish(topics.agent_status(district), mqtt_pb2.AgentStatus(
            district_id=district, agent_id=f"{district}-agent",
            state=mqtt_pb2.AGENT_STATE_ONLINE).SerializeToString(), qos=1, retain=True)
        cameras = CAMERAS[district]
        if each_camera:
            await asyncio.gather(*(
                client.publish(topics.camera_status(district, c.camera_id),
                               _status(c, expected_online(c.camera_id, round_)), qos=1)
                for c in cameras))
        beat = mqtt_pb2.Heartbeat(district_id=district, cameras=[
            mqtt_pb2.CameraStatus.FromString(_status(c, expected_online(c.camera_id, round_)))
            for c in cameras])
        snapshot = topics.route(topics.Kind.HEARTBEAT, district)
        await client.publish(snapshot.topic, beat.SerializeToString(), qos=snapshot.qos,
                             retain=snapshot.retain)


async def reconnect_city(settings: BrokerSettings, round_: int, *, each_camera: bool = False) -> None:
    await asyncio.gather(*(publish_district(settings, d.district_id, round_, each_camera=each_camera)
                           for d in CITY))


def city_current(core: CoreServer, round_: int) -> bool:
    """Every camera of the city is in the registry with its newest status (one cheap query)."""
    assert core.registry is not None
    rows = core.registry.db.execute("SELECT camera_id, status FROM cameras").fetchall()
    return len(rows) == len(ALL_IDS) and all(
        (status == "online") == expected_online(camera_id, round_) for camera_id, status in rows)


@pytest.fixture
async def city_core(core_config: CoreConfig) -> AsyncIterator[tuple[CoreServer, str]]:
    async with CoreServer(replace(core_config, http_listen="127.0.0.1:0")) as server:
        await server.wait_connected()
        assert server.access is not None
        _, token = server.access.operators.add("city-op", agency="police-112", role="operator",
                                               policy=server.access.policy)
        yield server, token


async def test_every_agent_reconnecting_at_once_loses_no_status(city_core, broker_settings) -> None:
    core, _ = city_core
    for round_ in (1, 2):  # first connection, then all 25 reconnect with changed statuses
        await reconnect_city(broker_settings, round_, each_camera=round_ == 1)
        await core.wait_until(lambda r, n=round_: city_current(core, n), 20)
    assert core.ingest.dropped == 0 and core.ingest.rejected == 0
    metrics = core.metrics.render().decode()
    assert "safetynet_core_messages_dropped_total{" not in metrics
    assert "safetynet_core_statuses_ingested_total" in metrics


@pytest.mark.one_backend  # the restarted core must start empty: a file of its own
async def test_a_restarted_core_has_the_whole_city_from_the_retained_snapshots(
        city_core, core_config: CoreConfig, broker_settings: BrokerSettings) -> None:
    core, _ = city_core
    await reconnect_city(broker_settings, 3)
    await core.wait_until(lambda r: city_current(core, 3), 20)
    fresh_config = replace(core_config, database=core_config.database.with_name("fresh.sqlite3"),
                           audit_database_file=core_config.database.with_name("fresh-audit.sqlite3"),
                           client_id="restarted-core", http_listen="")
    async with CoreServer(fresh_config) as fresh:
        # Nobody publishes now: what the broker retains must be the whole, current city.
        await fresh.wait_until(lambda r: city_current(fresh, 3), 20)
        assert fresh.ingest.received <= 2 * len(CITY)  # 25 snapshots and 25 statuses, not 5,000
        assert fresh.ingest.dropped == 0 and fresh.ingest.rejected == 0


async def test_a_flood_on_a_district_border_opens_the_ranked_cameras_of_both(
        city_core, broker_settings: BrokerSettings) -> None:
    core, _ = city_core
    await reconnect_city(broker_settings, 4)
    await core.wait_until(lambda r: city_current(core, 4), 20)
    assert core.access is not None
    _, token = core.access.operators.add("disaster-op", agency="disaster-room", role="operator",
                                         policy=core.access.policy)
    offices = {d.district_id: d.office for d in CITY}
    (lat1, lon1), (lat2, lon2) = offices["gangnam"], offices["seocho"]
    border = core_pb2.GeoPoint(lat=(lat1 + lat2) / 2, lon=(lon1 + lon2) / 2)
    async with grpc.aio.insecure_channel(core.address) as channel:
        report = await core_pb2_grpc.IncidentServiceStub(channel).Report(
            core_pb2.ReportIncidentRequest(incident_type="flood", location=border, radius_m=3000),
            metadata=[("authorization", f"Bearer {token}")])
    districts_in = {c.district_id for c in report.cameras}
    assert {"gangnam", "seocho"} <= districts_in
    distances = [c.distance_m for c in report.cameras]
    assert distances == sorted(distances) and distances[-1] <= 3000
    # Every camera of the city within 3 km, not a page of them, by a distance of our own
    # (a metre of slack at the rim for the two formulas' rounding).
    inside = {c.camera_id for cams in CAMERAS.values() for c in cams
              if _metres(border.lat, border.lon, c.lat, c.lon) <= 2999}
    near_rim = {c.camera_id for cams in CAMERAS.values() for c in cams
                if 2999 < _metres(border.lat, border.lon, c.lat, c.lon) <= 3001}
    got = {c.camera_id for c in report.cameras}
    assert inside <= got and got - inside <= near_rim


def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (math.sin((p2 - p1) / 2) ** 2
         + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


async def _list(stub: core_pb2_grpc.CameraServiceStub, token: str,
                **fields: object) -> core_pb2.ListCamerasResponse:
    return await stub.ListCameras(core_pb2.ListCamerasRequest(**fields),  # type: ignore[arg-type]
                                  metadata=[("authorization", f"Bearer {token}")])


async def test_list_cameras_pages_through_the_city_with_a_default_client(city_core, broker_settings) -> None:
    core, token = city_core
    await reconnect_city(broker_settings, 1)
    await core.wait_until(lambda r: city_current(core, 1), 20)
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.CameraServiceStub(channel)
        seen: list[str] = []
        page = await _list(stub, token)
        pages = 1
        while True:
            assert len(page.cameras) <= 1000
            seen += [c.camera_id for c in page.cameras]
            if not page.next_page_token:
                break
            page = await _list(stub, token, page_token=page.next_page_token)
            pages += 1
        assert seen == ALL_IDS and pages == 5
        near = await _list(stub, token, near=core_pb2.Near(
            point=core_pb2.GeoPoint(lat=37.5665, lon=126.9780), radius_m=3000), limit=7)
        distances = [c.distance_m for c in near.cameras]
        assert len(near.cameras) == 7 and distances == sorted(distances)


@pytest.mark.parametrize(("fields", "problem"), [
    ({"page_size": 10**6}, f"between 1 and {MAX_PAGE_SIZE}"),
    ({"page_size": -1}, f"between 1 and {MAX_PAGE_SIZE}"),
    ({"page_token": "bm90IG91cnM.AAAAAAAAAAAAAAAAAAAAAA"}, "not issued by this core or was altered"),
    ({"page_token": "%%%"}, "altered"),
])
async def test_bad_page_requests_are_invalid_arguments(city_core, fields, problem) -> None:
    core, token = city_core
    async with grpc.aio.insecure_channel(core.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await _list(core_pb2_grpc.CameraServiceStub(channel), token, **fields)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in (error.value.details() or "")


async def test_a_page_token_is_bound_to_its_query(city_core, broker_settings) -> None:
    core, token = city_core
    await reconnect_city(broker_settings, 1)
    await core.wait_until(lambda r: city_current(core, 1), 20)
    async with grpc.aio.insecure_channel(core.address) as channel:
        stub = core_pb2_grpc.CameraServiceStub(channel)
        first = await _list(stub, token, page_size=10)
        tampered = first.next_page_token[:-2] + ("AA" if first.next_page_token[-2:] != "AA" else "BB")
        for fields in ({"page_token": first.next_page_token, "district_id": CITY[0].district_id},
                       {"page_token": tampered}):
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await _list(stub, token, page_size=10, **fields)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        zero = await _list(stub, token, page_size=0)
        assert len(zero.cameras) == 1000  # 0 is the default (AIP-158)


async def _events(response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
    event: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in event:
                yield event
            event = {}
            continue
        key, _, value = line.partition(":")
        event[key] = value.removeprefix(" ")


async def _next_camera_event(response: aiohttp.ClientResponse,
                             kinds: Sequence[str] = ("cameras",)) -> dict[str, str]:
    async for event in _events(response):
        if event.get("event") in kinds:
            return event
    raise AssertionError("stream ended")


async def test_a_console_gets_a_snapshot_then_changes_pushed(city_core, broker_settings) -> None:
    core, token = city_core
    assert core.console is not None
    await reconnect_city(broker_settings, 1)
    await core.wait_until(lambda r: city_current(core, 1), 20)
    auth = {"Authorization": f"Bearer {token}"}
    url = core.console.url.rstrip("/")
    async with aiohttp.ClientSession(headers=auth) as http:
        async with http.get(f"{url}/api/cameras") as response:  # aiohttp sends Accept-Encoding: gzip
            assert response.headers.get("Content-Encoding") == "gzip"
            snapshot = await response.json()
        assert snapshot["fields"] == ["camera_id", "district_id", "name", "lat", "lon", "state"]
        assert len(snapshot["cameras"]) == len(ALL_IDS)
        async with http.get(f"{url}/api/overview") as response:
            assert "cameras" not in await response.json()
        camera = CAMERAS[CITY[3].district_id][5]
        online = not expected_online(camera.camera_id, 1)
        async with http.get(f"{url}/api/cameras/events",
                            params={"since": str(snapshot["version"])}) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            agents = await _next_camera_event(stream, ("agents",))
            assert json.loads(agents["data"])["agents"][CITY[3].district_id] is True
            async with aiomqtt.Client(broker_settings.host, broker_settings.port) as client:
                await client.publish(topics.camera_status(camera.district_id, camera.camera_id),
                                     _status(camera, online), qos=1, retain=True)
            async with asyncio.timeout(2):
                event = await _next_camera_event(stream)
            data = json.loads(event["data"])
            assert int(event["id"]) == data["version"] > snapshot["version"]
            assert [camera.camera_id, camera.district_id, camera.name, camera.lat, camera.lon,
                    "online" if online else "offline"] in data["changes"]
        # A follower from the future (another core's version) is told to refetch.
        async with http.get(f"{url}/api/cameras/events",
                            headers={"Last-Event-ID": str(data["version"] + 10**6)}) as stream:
            async with asyncio.timeout(2):
                assert (await _next_camera_event(stream, ("reset",)))["event"] == "reset"
        async with http.get(f"{url}/api/cameras/events", headers={"Authorization": "Bearer nope"}) as denied:
            assert denied.status == 401
        async with http.get(f"{url}/metrics") as response:
            assert 'safetynet_core_cameras{state="online"}' in await response.text()
