"""The gRPC face of evidence clips (``EvidenceService``): thin, like the other servicers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from cloud_core.access import AccessService
from cloud_core.evidence import ClipNotFound, ClipRow, EvidenceCustody, EvidenceRejected
from cloud_core.exceptions import InvalidRequest
from cloud_core.servicer import Context, _Authenticated, abort, translated_errors
from cloud_core.signalling_errors import evidence_refusal_for
from protos.safetynet.v1 import core_pb2, core_pb2_grpc


def _stamp(text: str | None) -> Timestamp | None:
    if not text:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(datetime.fromisoformat(text))
    return stamp


def clip_info(row: ClipRow) -> core_pb2.EvidenceClipInfo:
    return core_pb2.EvidenceClipInfo(
        clip_id=row.clip_id, camera_id=row.camera_id, district_id=row.district_id,
        incident_id=row.incident_id, operator_id=row.operator_id, state=row.state,
        manifest_sha256=row.manifest_sha256 or "", started_at=_stamp(row.started_at),
        ended_at=_stamp(row.ended_at), expires_at=_stamp(row.expires_at),
        hold_until=_stamp(row.hold_until), segments=len(row.segment_list),
        end_reason=row.end_reason)


@asynccontextmanager
async def evidence_errors(context: Context) -> AsyncIterator[None]:
    async with translated_errors(context):
        try:
            yield
        except ClipNotFound as exc:
            await abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except EvidenceRejected as exc:
            refusal = evidence_refusal_for(exc.code)
            await abort(context, refusal.grpc_status, f"the agent refused: {exc.message}")


class EvidenceServicer(_Authenticated, core_pb2_grpc.EvidenceServiceServicer):  # type: ignore[misc]
    def __init__(self, access: AccessService, custody: EvidenceCustody) -> None:
        super().__init__(access)
        self._custody = custody

    async def Preserve(self, request: core_pb2.PreserveEvidenceRequest,
                       context: Context) -> core_pb2.PreserveEvidenceResponse:
        async with evidence_errors(context):
            rows = await self._custody.preserve(self.caller(context), request.incident_id,
                                                list(request.camera_ids), request.max_seconds)
        return core_pb2.PreserveEvidenceResponse(clips=[clip_info(r) for r in rows])

    async def Stop(self, request: core_pb2.StopEvidenceRequest,
                   context: Context) -> core_pb2.EvidenceClipInfo:
        async with evidence_errors(context):
            row = await self._custody.stop(self.caller(context), request.clip_id)
        return clip_info(row)

    async def Export(self, request: core_pb2.ExportEvidenceRequest,
                     context: Context) -> AsyncIterator[core_pb2.EvidenceFileChunk]:
        async with evidence_errors(context):
            caller = self.caller(context)
            async for name, offset, data in self._custody.export(caller, request.clip_id):
                yield core_pb2.EvidenceFileChunk(file=name, offset=offset, data=data)

    async def Hold(self, request: core_pb2.HoldEvidenceRequest,
                   context: Context) -> core_pb2.EvidenceClipInfo:
        async with evidence_errors(context):
            if not request.HasField("hold_until"):
                raise InvalidRequest("a legal hold needs hold_until")
            row = await self._custody.hold(self.caller(context), request.clip_id,
                                           request.hold_until.ToDatetime(tzinfo=UTC),
                                           request.reason)
        return clip_info(row)

    async def List(self, request: core_pb2.ListEvidenceRequest,
                   context: Context) -> core_pb2.ListEvidenceResponse:
        async with evidence_errors(context):
            caller = self.caller(context)
            rows = []
            for row in self._custody.clips(request.incident_id):
                try:
                    rows.append(self._custody.visible(caller, row.clip_id))
                except ClipNotFound:
                    continue
        return core_pb2.ListEvidenceResponse(clips=[clip_info(r) for r in rows])
