"""The gRPC face of 112 dispatch (``DispatchService``): thin, like every servicer."""

from __future__ import annotations

from collections.abc import Sequence

from cloud_core.access import AccessService, Caller
from cloud_core.dispatch import DispatchPush
from cloud_core.servicer import Context, _stamp, bearer_token, translated_errors
from protos.safetynet.v1 import core_pb2, core_pb2_grpc


def push_message(push: DispatchPush) -> core_pb2.DispatchPush:
    return core_pb2.DispatchPush(push_id=push.push_id, kind=push.kind, camera_id=push.camera_id,
                                 at=_stamp(push.at), sha256=push.sha256, bytes=push.bytes,
                                 pushed_by=push.pushed_by)


def state_message(incident_id: str, officers: Sequence[str],
                  pushes: Sequence[DispatchPush]) -> core_pb2.DispatchState:
    return core_pb2.DispatchState(incident_id=incident_id, officer_ids=list(officers),
                                  pushes=[push_message(p) for p in pushes])


class DispatchServicer(core_pb2_grpc.DispatchServiceServicer):  # type: ignore[misc]
    def __init__(self, access: AccessService) -> None:
        self._access = access

    def _caller(self, context: Context) -> Caller:
        return self._access.authenticate(bearer_token(context), context.peer() or "")

    async def Assign(self, request: core_pb2.AssignOfficerRequest,
                     context: Context) -> core_pb2.DispatchState:
        async with translated_errors(context):
            caller = self._caller(context)
            await self._access.assign_officer(caller, request.incident_id, request.officer_id)
            officers, pushes = self._access.dispatch_state(caller, request.incident_id)
        return state_message(request.incident_id, officers, pushes)

    async def Unassign(self, request: core_pb2.AssignOfficerRequest,
                       context: Context) -> core_pb2.DispatchState:
        async with translated_errors(context):
            caller = self._caller(context)
            await self._access.unassign_officer(caller, request.incident_id, request.officer_id)
            officers, pushes = self._access.dispatch_state(caller, request.incident_id)
        return state_message(request.incident_id, officers, pushes)

    async def PushStill(self, request: core_pb2.PushStillRequest,
                        context: Context) -> core_pb2.DispatchPush:
        async with translated_errors(context):
            push = await self._access.push_still(self._caller(context), request.incident_id,
                                                 request.camera_id)
        return push_message(push)

    async def HandOffCamera(self, request: core_pb2.HandOffCameraRequest,
                            context: Context) -> core_pb2.DispatchPush:
        async with translated_errors(context):
            push = await self._access.hand_off_camera(self._caller(context), request.incident_id,
                                                      request.camera_id)
        return push_message(push)

    async def Get(self, request: core_pb2.GetDispatchRequest,
                  context: Context) -> core_pb2.DispatchState:
        async with translated_errors(context):
            officers, pushes = self._access.dispatch_state(self._caller(context),
                                                           request.incident_id)
        return state_message(request.incident_id, officers, pushes)
