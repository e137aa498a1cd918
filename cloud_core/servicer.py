"""Thin gRPC servicers: convert protobuf to plain calls, and our errors to status codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import structlog

from cloud_core.exceptions import (
    AgentUnavailable,
    CameraNotFound,
    RegistryError,
    SessionNotFound,
    SessionRejected,
)
from cloud_core.registry import CameraRecord, Registry
from cloud_core.sessions import InvalidOffer, SessionBroker
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2

log = structlog.get_logger(__name__)

_STATUS = {"online": mqtt_pb2.CAMERA_STATE_ONLINE, "offline": mqtt_pb2.CAMERA_STATE_OFFLINE}
_REJECTED_CODES = {
    "UNKNOWN_CAMERA": grpc.StatusCode.NOT_FOUND,
    "CAMERA_OFFLINE": grpc.StatusCode.UNAVAILABLE,
    "BAD_OFFER": grpc.StatusCode.INVALID_ARGUMENT,
    "GRANT_REJECTED": grpc.StatusCode.PERMISSION_DENIED,
    "CAPACITY": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "UNKNOWN_SESSION": grpc.StatusCode.NOT_FOUND,
}


def camera_message(camera: CameraRecord) -> core_pb2.Camera:
    message = core_pb2.Camera(
        camera_id=camera.camera_id, district_id=camera.district_id, name=camera.name,
        location=core_pb2.GeoPoint(lat=camera.lat, lon=camera.lon),
        status=_STATUS.get(camera.effective_status, mqtt_pb2.CAMERA_STATE_UNSPECIFIED),
        detail=camera.detail, viewers=camera.viewers, agent_online=camera.agent_online,
        distance_m=camera.distance_m or 0.0,
    )
    reason = camera.effective_reason
    if reason:
        message.reason = mqtt_pb2.OfflineReason.Value(f"OFFLINE_REASON_{reason.upper()}")
    if camera.last_seen:
        message.last_seen.FromDatetime(camera.last_seen)
    return message


async def _abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    log.info("request refused", code=code.name, why=message)
    await context.abort(code, message)


@asynccontextmanager
async def translated_errors(context: grpc.aio.ServicerContext) -> AsyncIterator[None]:
    """Our errors become gRPC statuses here, and only here."""
    try:
        yield
    except CameraNotFound as exc:
        await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
    except AgentUnavailable as exc:
        await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
    except SessionRejected as exc:
        code = _REJECTED_CODES.get(exc.code, grpc.StatusCode.INTERNAL)
        await _abort(context, code, f"the agent refused the session: {exc.message}")
    except SessionNotFound as exc:
        await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
    except InvalidOffer as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except RegistryError as exc:
        log.error("registry error", error=str(exc))
        await _abort(context, grpc.StatusCode.INTERNAL, "the registry is unavailable")


class CameraServicer(core_pb2_grpc.CameraServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def ListCameras(self, request: core_pb2.ListCamerasRequest,
                          context: grpc.aio.ServicerContext) -> core_pb2.ListCamerasResponse:
        near = None
        if request.HasField("near"):
            point, radius = request.near.point, request.near.radius_m
            if not (abs(point.lat) <= 90 and abs(point.lon) <= 180):
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                             f"near.point ({point.lat}, {point.lon}) is not a place on Earth")
            if not 0 < radius <= 50_000:
                await _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                             f"near.radius_m must be in (0, 50000], got {radius:g}")
            near = (point.lat, point.lon, radius)
        if request.limit < 0:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "limit must not be negative")
        status = {mqtt_pb2.CAMERA_STATE_ONLINE: "online",
                  mqtt_pb2.CAMERA_STATE_OFFLINE: "offline"}.get(request.status, "")
        async with translated_errors(context):
            cameras = self._registry.list_cameras(district_id=request.district_id, status=status,
                                                  near=near, limit=request.limit)
        return core_pb2.ListCamerasResponse(cameras=[camera_message(c) for c in cameras])

    async def GetCamera(self, request: core_pb2.GetCameraRequest,
                        context: grpc.aio.ServicerContext) -> core_pb2.Camera:
        camera = self._registry.camera(request.camera_id)
        if camera is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND,
                         f"camera {request.camera_id!r} is not in the registry")
        assert camera is not None
        return camera_message(camera)


class SessionServicer(core_pb2_grpc.SessionServiceServicer):
    def __init__(self, broker: SessionBroker) -> None:
        self._broker = broker

    async def OpenSession(self, request: core_pb2.OpenSessionRequest,
                          context: grpc.aio.ServicerContext) -> core_pb2.OpenSessionResponse:
        async with translated_errors(context):
            opened = await self._broker.open(request.camera_id, request.sdp_offer)
        response = core_pb2.OpenSessionResponse(
            session_id=opened.session_id, sdp_answer=opened.sdp_answer,
            camera=camera_message(opened.camera),
        )
        response.expires_at.FromDatetime(opened.expires_at)
        return response

    async def CloseSession(self, request: core_pb2.CloseSessionRequest,
                           context: grpc.aio.ServicerContext) -> core_pb2.CloseSessionResponse:
        async with translated_errors(context):
            await self._broker.close(request.session_id)
        return core_pb2.CloseSessionResponse()

