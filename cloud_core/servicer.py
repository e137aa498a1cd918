"""Thin gRPC servicers: authenticate, convert protobuf to plain calls, our errors to status codes.

Every call carries ``authorization: Bearer <operator token>`` in its metadata. Policy lives in
``cloud_core.access``; nothing here decides anything.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, cast

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from cloud_core import audit as audit_log
from cloud_core.access import AccessService, AreaRequest, Caller, IncidentReport
from cloud_core.exceptions import (
    AccessDenied,
    AgentUnavailable,
    CameraNotFound,
    IncidentNotFound,
    InvalidRequest,
    RegistryError,
    SessionNotFound,
    SessionRejected,
    SignInThrottled,
    Unauthenticated,
)
from cloud_core.incident_trail import IncidentLink
from cloud_core.incidents import StoredIncident
from cloud_core.page_token import MAX_PAGE_SIZE, PageTokens, page_size
from cloud_core.policy import BreakGlass
from cloud_core.registry import CameraRecord, CameraRow, effective_state
from cloud_core.signalling_errors import refusal_for
from protos.safetynet.v1 import core_pb2, core_pb2_grpc, mqtt_pb2
from runtime.turn_credentials import to_proto as turn_to_proto

log = structlog.get_logger(__name__)

#: Every handler's context; requests and responses are typed on the handlers themselves.
Context = grpc.aio.ServicerContext[Any, Any]

_STATUS = {"online": mqtt_pb2.CAMERA_STATE_ONLINE, "offline": mqtt_pb2.CAMERA_STATE_OFFLINE}
# The registry's reason names ("stalled") as the enum; protobuf's stubs type items() as ints.
_REASONS = {name.removeprefix("OFFLINE_REASON_").lower(): cast(mqtt_pb2.OfflineReason, value)
            for name, value in mqtt_pb2.OfflineReason.items()}


def _stamp(moment: datetime | None) -> Timestamp | None:
    if moment is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _time(stamp: Timestamp, has: bool, field: str = "time") -> datetime | None:
    if not has:
        return None
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest(f"{field} is not a valid time (years 1-9999)") from exc


def _row_message(row: CameraRow, broker_reachable: bool) -> core_pb2.Camera:
    """``camera_message`` straight from a registry row (``Registry.page_rows``)."""
    (camera_id, district_id, name, lat, lon, _kind, status, reason, detail, viewers, last_seen,
     agent_online) = row
    shown, why = effective_state(status, reason, agent_online=bool(agent_online),
                                 broker_reachable=broker_reachable)
    message = core_pb2.Camera(
        camera_id=camera_id, district_id=district_id, name=name,
        location=core_pb2.GeoPoint(lat=lat, lon=lon),
        status=_STATUS.get(shown, mqtt_pb2.CAMERA_STATE_UNSPECIFIED), detail=detail,
        viewers=viewers, agent_online=bool(agent_online),
        reason=_REASONS.get(why, mqtt_pb2.OFFLINE_REASON_UNSPECIFIED))
    if last_seen:
        _set_time(message.last_seen, datetime.fromisoformat(last_seen))
    return message


class EncodedCameras:
    """Each camera's ``Camera`` message, encoded once per change of its row: a page of 5,000
    cameras built field by field costs ~55 ms of Python, merged from the encoded bytes ~4 ms.
    Keyed by camera id and checked against the whole row (and the broker's reachability), so a
    changed camera is encoded again and nothing stale is served; bounded by ``limit`` entries
    (cleared past it). Used from worker threads: each step is one dict operation."""

    def __init__(self, limit: int = 250_000) -> None:
        self._encoded: dict[str, tuple[CameraRow, bool, bytes]] = {}
        self._limit = limit

    def page(self, rows: Sequence[CameraRow], broker_reachable: bool,
             next_token: str) -> core_pb2.ListCamerasResponse:
        response = core_pb2.ListCamerasResponse(next_page_token=next_token)
        for row in rows:
            response.cameras.add().MergeFromString(self.encoded(row, broker_reachable))
        return response

    def encoded(self, row: CameraRow, broker_reachable: bool) -> bytes:
        cached = self._encoded.get(row[0])
        if cached is not None and cached[1] is broker_reachable and cached[0] == row:
            return cached[2]
        data = _row_message(row, broker_reachable).SerializeToString()
        if len(self._encoded) >= self._limit:
            self._encoded.clear()
        self._encoded[row[0]] = (row, broker_reachable, data)
        return data


def _set_time(stamp: Timestamp, moment: datetime) -> None:
    """What FromDatetime does, in one C call (a 68,000-camera listing spent a quarter of its
    time in FromDatetime's Python); ``moment`` is an aware UTC time."""
    micros = round(moment.timestamp() * 1_000_000)
    stamp.seconds, rest = divmod(micros, 1_000_000)
    stamp.nanos = rest * 1000


def camera_message(camera: CameraRecord) -> core_pb2.Camera:
    message = core_pb2.Camera(
        camera_id=camera.camera_id, district_id=camera.district_id, name=camera.name,
        location=core_pb2.GeoPoint(lat=camera.lat, lon=camera.lon),
        status=_STATUS.get(camera.effective_status, mqtt_pb2.CAMERA_STATE_UNSPECIFIED),
        detail=camera.detail, viewers=camera.viewers, agent_online=camera.agent_online,
        distance_m=camera.distance_m or 0.0,
    )
    message.reason = _REASONS.get(camera.effective_reason, mqtt_pb2.OFFLINE_REASON_UNSPECIFIED)
    if camera.last_seen:
        _set_time(message.last_seen, camera.last_seen)
    return message


def _near(request: core_pb2.ListCamerasRequest) -> tuple[float, float, float]:
    point, radius = request.near.point, request.near.radius_m
    if not (abs(point.lat) <= 90 and abs(point.lon) <= 180):
        raise InvalidRequest(f"near.point ({point.lat}, {point.lon}) is not a place on Earth")
    if not 0 < radius <= 50_000:
        raise InvalidRequest(f"near.radius_m must be in (0, 50000], got {radius:g}")
    if not 0 <= request.limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be between 0 and {MAX_PAGE_SIZE}, got {request.limit}")
    return point.lat, point.lon, radius


def _cameras_response(cameras: list[CameraRecord], next_token: str) -> core_pb2.ListCamerasResponse:
    return core_pb2.ListCamerasResponse(cameras=[camera_message(c) for c in cameras],
                                        next_page_token=next_token)


def incident_message(stored: StoredIncident,
                     links: Sequence[IncidentLink] = ()) -> core_pb2.Incident:
    i = stored.incident
    message = core_pb2.Incident(
        incident_id=i.incident_id, incident_type=i.incident_type, service=i.service,
        location=core_pb2.GeoPoint(lat=i.lat, lon=i.lon), radius_m=i.radius_m,
        agencies=sorted(i.agencies), opened_at=_stamp(i.opened_at), expires_at=_stamp(i.expires_at),
        legal_basis=i.legal_basis, purpose=i.purpose, external_ref=i.external_ref,
        reported_by=stored.reported_by, close_reason=stored.close_reason,
        open=i.closed_at is None and datetime.now(UTC) < i.expires_at,
    )
    if i.closed_at is not None:
        message.closed_at.FromDatetime(i.closed_at)
    message.trail.extend(core_pb2.TrailPoint(
        location=core_pb2.GeoPoint(lat=p.lat, lon=p.lon), at=_stamp(p.at), source=p.source)
        for p in i.trail)
    if i.area is not None:
        polygon = i.area.geojson()
        message.area_geojson = json.dumps(polygon) if polygon else ""
        message.area_district_ids.extend(sorted(i.area.district_ids))
    message.links.extend(core_pb2.IncidentLink(
        incident_id=link.other_id, kind=link.kind, outgoing=link.outgoing, reason=link.reason,
        at=_stamp(link.at), linked_by=link.linked_by) for link in links)
    return message


def report_message(report: IncidentReport,
                   links: Sequence[IncidentLink] = ()) -> core_pb2.IncidentReport:
    return core_pb2.IncidentReport(
        existing=report.existing,
        incident=incident_message(report.incident, links),
        cameras=[camera_message(c) for c in report.cameras],
        facilities=[core_pb2.Facility(
            facility_id=f.facility_id, kind=f.kind, name=f.name,
            location=core_pb2.GeoPoint(lat=f.lat, lon=f.lon), distance_m=f.distance_m,
            detail=f.detail) for f in report.facilities],
    )


def break_glass_message(window: BreakGlass) -> core_pb2.BreakGlass:
    message = core_pb2.BreakGlass(
        breakglass_id=window.breakglass_id, operator_id=window.operator_id,
        camera_ids=sorted(window.camera_ids), district_ids=sorted(window.district_ids),
        reason=window.reason, started_at=_stamp(window.started_at),
        expires_at=_stamp(window.expires_at))
    if window.stopped_at is not None:
        message.stopped_at.FromDatetime(window.stopped_at)
    return message


def bearer_token(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip()
    return ""


#: Sent with every refusal: an answer of the core is never to be retried on another replica
#: (gRFC A6: a negative pushback stops the client's retries). Clients retry UNAVAILABLE only
#: when no replica answered at all (``runtime.core_channel``); "the agent is unavailable" is
#: an answer, and another replica would give the same one, a timeout later.
NO_RETRY = (("grpc-retry-pushback-ms", "-1"),)


async def _abort(context: Context, code: grpc.StatusCode, message: str) -> None:
    log.info("request refused", code=code.name, why=message)
    await abort(context, code, message)


async def abort(context: Context, code: grpc.StatusCode, message: str) -> None:
    """End the call with ``code``: a refusal the client's retry policy leaves alone."""
    context.set_trailing_metadata(NO_RETRY)
    await context.abort(code, message)


@asynccontextmanager
async def translated_errors(context: Context) -> AsyncIterator[None]:
    """Our errors become gRPC statuses here, and only here."""
    try:
        yield
    except Unauthenticated as exc:
        await _abort(context, grpc.StatusCode.UNAUTHENTICATED, exc.reason)
    except AccessDenied as exc:
        await _abort(context, grpc.StatusCode.PERMISSION_DENIED, exc.reason)
    except (CameraNotFound, IncidentNotFound, SessionNotFound) as exc:
        await _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
    except AgentUnavailable as exc:
        await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
    except SessionRejected as exc:
        await _abort(context, refusal_for(exc.code).grpc_status,
                     f"the agent refused the session: {exc.message}")
    except InvalidRequest as exc:
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, exc.problem)
    except RegistryError as exc:
        log.error("registry error", error=str(exc))
        await _abort(context, grpc.StatusCode.INTERNAL, "the registry is unavailable")
    except SignInThrottled as exc:
        await _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, exc.reason)
    except ValueError as exc:  # a caller's value our validation refused (no traceback, no type)
        await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"invalid request: {exc}")
    except grpc.aio.AbortError:
        raise
    except Exception:
        log.exception("request failed")
        await _abort(context, grpc.StatusCode.INTERNAL, "the core failed to handle the request")


class _Authenticated:
    def __init__(self, access: AccessService) -> None:
        self._access = access

    def caller(self, context: Context) -> Caller:
        return self._access.authenticate(bearer_token(context), context.peer() or "")


class CameraServicer(_Authenticated, core_pb2_grpc.CameraServiceServicer):  # type: ignore[misc]
    """ListCameras pages (AIP-158, signed tokens); a near query is ranked and cut, never paged."""

    def __init__(self, access: AccessService, page_tokens: PageTokens | None = None) -> None:
        super().__init__(access)
        self._tokens = page_tokens or PageTokens()
        self._encoded = EncodedCameras()

    async def ListCameras(self, request: core_pb2.ListCamerasRequest,
                          context: Context) -> core_pb2.ListCamerasResponse:
        async with translated_errors(context):
            caller = self.caller(context)
            size = page_size(request.page_size)
            status = {mqtt_pb2.CAMERA_STATE_ONLINE: "online",
                      mqtt_pb2.CAMERA_STATE_OFFLINE: "offline"}.get(request.status, "")
            if request.HasField("near"):
                near = _near(request)
                cameras = self._access.list_cameras(caller, district_id=request.district_id,
                                                    status=status, near=near,
                                                    limit=request.limit or size)
                return await asyncio.to_thread(_cameras_response, cameras, "")
            query = f"{request.district_id}|{status}"
            after = self._tokens.read(request.page_token, query) if request.page_token else ""
            # Thousands of rows and messages: read and built off the loop, which keeps serving.
            return await asyncio.to_thread(self._page, request.district_id, status, after, size,
                                           query)

    def _page(self, district_id: str, status: str, after: str, size: int,
              query: str) -> core_pb2.ListCamerasResponse:
        registry = self._access.registry
        rows = registry.page_rows(district_id=district_id, status=status, after=after,
                                  limit=size + 1)
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            next_token = self._tokens.issue(rows[-1][0], query)
        return self._encoded.page(rows, registry.broker_reachable, next_token)

    async def GetCamera(self, request: core_pb2.GetCameraRequest,
                        context: Context) -> core_pb2.Camera:
        async with translated_errors(context):
            self.caller(context)
            camera = self._access.registry.camera(request.camera_id)
            if camera is None:
                raise CameraNotFound(request.camera_id)
        return camera_message(camera)


class SessionServicer(_Authenticated, core_pb2_grpc.SessionServiceServicer):  # type: ignore[misc]
    async def OpenSession(self, request: core_pb2.OpenSessionRequest,
                          context: Context) -> core_pb2.OpenSessionResponse:
        async with translated_errors(context):
            caller = self.caller(context)
            opened = await self._access.open_session(
                caller, request.camera_id, request.sdp_offer, incident_id=request.incident_id,
                breakglass_id=request.breakglass_id)
        return core_pb2.OpenSessionResponse(
            session_id=opened.session_id, sdp_answer=opened.sdp_answer,
            camera=camera_message(opened.camera), expires_at=_stamp(opened.expires_at),
            basis=opened.basis, incident_id=opened.incident_id,
            ice_servers=turn_to_proto(opened.ice_servers))

    async def ReportFirstFrame(self, request: core_pb2.FirstFrameRequest,
                               context: Context) -> core_pb2.FirstFrameResponse:
        async with translated_errors(context):
            row = self._access.first_frame(self.caller(context), request.session_id,
                                           request.client or "other")
        if row is None:
            return core_pb2.FirstFrameResponse(recorded=False)
        return core_pb2.FirstFrameResponse(recorded=True,
                                           report_to_first_frame_ms=row.report_to_frame_ms,
                                           grant_to_first_frame_ms=row.grant_to_frame_ms)

    async def CloseSession(self, request: core_pb2.CloseSessionRequest,
                           context: Context) -> core_pb2.CloseSessionResponse:
        async with translated_errors(context):
            await self._access.close_session(self.caller(context), request.session_id)
        return core_pb2.CloseSessionResponse()

    async def GetSession(self, request: core_pb2.GetSessionRequest,
                         context: Context) -> core_pb2.SessionStatus:
        async with translated_errors(context):
            state = self._access.session_state(self.caller(context), request.session_id)
        status = core_pb2.SessionStatus(session_id=state.session_id, camera_id=state.camera_id,
                                        active=state.active, reason=state.reason)
        status.expires_at.FromDatetime(state.expires_at)
        return status


class IncidentServicer(_Authenticated, core_pb2_grpc.IncidentServiceServicer):  # type: ignore[misc]
    async def Report(self, request: core_pb2.ReportIncidentRequest,
                     context: Context) -> core_pb2.IncidentReport:
        async with translated_errors(context):
            caller = self.caller(context)
            area = None
            if request.area_geojson or request.area_district_ids:
                area = AreaRequest(request.area_geojson or None,
                                   tuple(request.area_district_ids))
            if not request.HasField("location") and area is None:
                raise InvalidRequest("an incident needs a location")
            located = request.HasField("location")
            if request.relay and self._access.relays is None:
                self._access.ask_relay(caller, "")  # refused: this core runs no relays
            report = await self._access.report_incident(
                caller, incident_type=request.incident_type,
                lat=request.location.lat if located else None,
                lon=request.location.lon if located else None, radius_m=request.radius_m or None,
                area=area,
                occurred_at=_time(request.occurred_at, request.HasField("occurred_at"),
                                  "occurred_at"),
                external_ref=request.external_ref, legal_basis=request.legal_basis or None,
                service=request.service or None, clamp=request.clamp_to_max)
            if request.relay:
                self._access.ask_relay(caller, report.incident.incident.incident_id)
        return self._report(report)

    def _report(self, report: IncidentReport) -> core_pb2.IncidentReport:
        incident_id = report.incident.incident.incident_id
        return report_message(report, self._access.incident_links(incident_id))

    async def Move(self, request: core_pb2.MoveIncidentRequest,
                   context: Context) -> core_pb2.IncidentReport:
        async with translated_errors(context):
            caller = self.caller(context)
            if not request.HasField("location"):
                raise InvalidRequest("a move needs a location")
            report = await self._access.move_incident(
                caller, request.incident_id, request.location.lat, request.location.lon,
                at=_time(request.at, request.HasField("at")),
                source=request.source or "operator")
        return self._report(report)

    async def Link(self, request: core_pb2.LinkIncidentsRequest,
                   context: Context) -> core_pb2.LinkIncidentsResponse:
        async with translated_errors(context):
            one, other = await self._access.link_incidents(
                self.caller(context), request.incident_id, request.other_incident_id,
                request.reason)
        links = self._access.incident_links
        return core_pb2.LinkIncidentsResponse(
            incident=incident_message(one, links(one.incident.incident_id)),
            other=incident_message(other, links(other.incident.incident_id)))

    async def Extend(self, request: core_pb2.ExtendIncidentRequest,
                     context: Context) -> core_pb2.Incident:
        async with translated_errors(context):
            stored = await self._access.extend_incident(
                self.caller(context), request.incident_id, request.minutes, request.reason)
        return incident_message(stored, self._access.incident_links(request.incident_id))

    async def ListIncidentCameras(self, request: core_pb2.ListIncidentCamerasRequest,
                                  context: Context) -> core_pb2.ListIncidentCamerasResponse:
        async with translated_errors(context):
            try:
                offset = int(request.page_token or "0")
            except ValueError as exc:
                raise InvalidRequest(f"page_token {request.page_token[:40]!r} is not one this "
                                     "service returned") from exc
            size = request.page_size or 100
            cameras, total = self._access.incident_cameras(
                self.caller(context), request.incident_id, offset, size)
        following = offset + len(cameras)
        return core_pb2.ListIncidentCamerasResponse(
            cameras=[camera_message(c) for c in cameras], total=total,
            next_page_token=str(following) if following < total else "")

    async def HandOff(self, request: core_pb2.HandOffIncidentRequest,
                      context: Context) -> core_pb2.IncidentReport:
        async with translated_errors(context):
            report = await self._access.hand_off_incident(
                self.caller(context), request.incident_id, request.reason,
                incident_type=request.incident_type or None, service=request.service or None)
        return self._report(report)

    async def Close(self, request: core_pb2.CloseIncidentRequest,
                    context: Context) -> core_pb2.Incident:
        async with translated_errors(context):
            stored = await self._access.close_incident(self.caller(context), request.incident_id,
                                                       request.reason)
        return incident_message(stored)

    async def Get(self, request: core_pb2.GetIncidentRequest,
                  context: Context) -> core_pb2.IncidentReport:
        async with translated_errors(context):
            report = self._access.get_incident(self.caller(context), request.incident_id)
        return self._report(report)

    async def List(self, request: core_pb2.ListIncidentsRequest,
                   context: Context) -> core_pb2.ListIncidentsResponse:
        async with translated_errors(context):
            incidents = self._access.list_incidents(self.caller(context),
                                                    include_closed=request.include_closed)
        return core_pb2.ListIncidentsResponse(incidents=[incident_message(i) for i in incidents])


class GrantServicer(_Authenticated, core_pb2_grpc.GrantServiceServicer):  # type: ignore[misc]
    async def StartBreakGlass(self, request: core_pb2.StartBreakGlassRequest,
                              context: Context) -> core_pb2.BreakGlass:
        async with translated_errors(context):
            window = await self._access.start_break_glass(
                self.caller(context), camera_ids=list(request.camera_ids),
                district_ids=list(request.district_ids), reason=request.reason,
                minutes=request.minutes or 30, clamp=request.clamp_to_max)
        return break_glass_message(window)

    async def StopBreakGlass(self, request: core_pb2.StopBreakGlassRequest,
                             context: Context) -> core_pb2.BreakGlass:
        async with translated_errors(context):
            window = await self._access.stop_break_glass(self.caller(context), request.breakglass_id)
        return break_glass_message(window)

    async def RevokeSession(self, request: core_pb2.RevokeSessionRequest,
                            context: Context) -> core_pb2.RevokeSessionResponse:
        async with translated_errors(context):
            await self._access.revoke_session(self.caller(context), request.session_id,
                                              request.reason)
        return core_pb2.RevokeSessionResponse()


class AuditServicer(_Authenticated, core_pb2_grpc.AuditServiceServicer):  # type: ignore[misc]
    def _auditor(self, context: Context) -> Caller:
        caller = self.caller(context)
        self._access.require_auditor(caller)
        return caller

    async def Verify(self, request: core_pb2.VerifyAuditRequest,
                     context: Context) -> core_pb2.VerifyAuditResponse:
        async with translated_errors(context):
            self._auditor(context)
            report = await asyncio.to_thread(audit_log.verify, self._access.audit.db_path,
                                             self._access.audit.public_key)
        return core_pb2.VerifyAuditResponse(
            ok=report.ok, records=report.records, broken_seq=report.broken_seq or 0,
            problem=report.problem or "", head_hash=report.head_hash or "",
            last_checkpoint_seq=report.last_checkpoint_seq or 0)

    async def Export(self, request: core_pb2.ExportAuditRequest,
                     context: Context) -> core_pb2.ExportAuditResponse:
        async with translated_errors(context):
            caller = self._auditor(context)
            fmt = request.format or "csv"
            if fmt not in ("csv", "json"):
                raise InvalidRequest(f"format must be csv or json, got {fmt!r}")
            since = _time(request.since, request.HasField("since"), "since")
            until = _time(request.until, request.HasField("until"), "until")
            content = await asyncio.to_thread(audit_log.export, self._access.audit.db_path,
                                              since, until, fmt)  # type: ignore[arg-type]
            count = audit_log.count_records(content, fmt)
            await self._access.record_export(caller, since, until, fmt, count)
        return core_pb2.ExportAuditResponse(format=fmt, content=content.encode(), records=count)

    async def Search(self, request: core_pb2.SearchAuditRequest,
                     context: Context) -> core_pb2.SearchAuditResponse:
        async with translated_errors(context):
            self._auditor(context)
            records = await asyncio.to_thread(
                audit_log.search, self._access.audit.db_path, operator_id=request.operator_id or None,
                camera_id=request.camera_id or None, incident_id=request.incident_id or None,
                since=_time(request.since, request.HasField("since"), "since"),
                until=_time(request.until, request.HasField("until"), "until"),
                limit=request.limit or 100)
        return core_pb2.SearchAuditResponse(
            records_json=[json.dumps(r.to_dict(), ensure_ascii=False) for r in records])

