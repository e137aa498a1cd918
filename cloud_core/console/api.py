"""The console's JSON API: thin handlers over AccessService, one per screen's need.

    GET  /api/me                      who is signed in, what they may report
    GET  /api/districts               districts, their agents and outlines (drawn once)
    GET  /api/overview                open incidents, agents, camera version (polled; small)
    GET  /api/cameras                 every camera at a version (gzip when accepted), fetched once
    GET  /api/cameras/events?since=V  Server-Sent Events: camera changes after V, agent changes
    GET  /api/incidents[?closed=1]    incidents visible to the caller
    POST /api/incidents               report one: {incident_type, lat, lon, radius_m?, …} → 201
    GET  /api/incidents/{id}          an incident with its ranked cameras (and facilities, 119)
    POST /api/incidents/{id}/close    {reason}
    POST /api/incidents/{id}/move     {lat, lon, at?, source?}: the grant follows the position
    POST /api/incidents/{id}/link     {other_incident_id, reason}
    POST /api/incidents/{id}/handoff  {reason, incident_type?}: the linked incident (SOS → 112)
    POST /api/incidents/{id}/extend   {minutes, reason}: past the time box (disaster response)
    GET  /api/incidents/{id}/cameras?offset=&limit=   every camera it reaches, a page at a time
    GET  /api/ice-servers             TURN credentials for the console's offers (ice_servers.py)
    GET  /api/sessions/{id}           a session's state: active, why it ended, grant expiry
    POST /api/sessions/{id}/first-frame  {client}: the client decoded its first frame
    GET  /api/golden-time?since=&until=&format=json|csv   report → grant → first frame, p50/p95
                                      by service and day (json) or every row (csv)
    GET  /api/audit?operator=&camera=&incident=&action=&since=&until=&limit=   (auditors)
    GET  /api/audit/verify            chain and checkpoint verification (auditors)
    GET  /api/audit/export?since=&until=&format=csv|json   a recorded export (auditors)

Every call re-authenticates its bearer token, so a disabled operator is out at the next call
(the event stream checks it when it opens; docs/city-scale.md describes snapshot and stream).
Sessions are opened and closed through WHEP (``cloud_core.console.whep``), the console included.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from cloud_core import audit as audit_log
from cloud_core.access import (
    VIEW_ROLES,
    AccessService,
    AreaRequest,
    Caller,
    IncidentReport,
    SessionState,
)
from cloud_core.camera_feed import CameraFeed, FeedLost
from cloud_core.console.bearer import authenticate
from cloud_core.console.district_outlines import DistrictOutline
from cloud_core.exceptions import AccessDenied, InvalidRequest
from cloud_core.incidents import Facility, StoredIncident
from cloud_core.metrics import CoreMetrics
from cloud_core.policy import Role, ServicePolicy
from cloud_core.registry import CameraRecord
from cloud_core.timestamps import iso


def camera_json(camera: CameraRecord, in_use: set[str]) -> dict[str, Any]:
    return {
        "camera_id": camera.camera_id, "district_id": camera.district_id, "name": camera.name,
        "lat": camera.lat, "lon": camera.lon, "status": camera.effective_status,
        "reason": camera.effective_reason, "detail": camera.detail, "viewers": camera.viewers,
        "agent_online": camera.agent_online, "in_use": camera.camera_id in in_use,
        "distance_m": None if camera.distance_m is None else round(camera.distance_m, 1),
    }


def incident_json(stored: StoredIncident, access: AccessService, now: datetime) -> dict[str, Any]:
    i = stored.incident
    service = access.policy.services.get(i.service)
    return {
        "incident_id": i.incident_id, "incident_type": i.incident_type, "service": i.service,
        "service_title": service.title if service else i.service,
        "lat": i.lat, "lon": i.lon, "radius_m": i.radius_m, "agencies": sorted(i.agencies),
        "opened_at": iso(i.opened_at), "expires_at": iso(i.expires_at),
        "closed_at": iso(i.closed_at), "close_reason": stored.close_reason,
        "legal_basis": i.legal_basis, "purpose": i.purpose, "external_ref": i.external_ref,
        "reported_by": stored.reported_by,
        "open": i.closed_at is None and now < i.expires_at,
        "hand_off_to": service.hand_off_to if service else None,
        "hand_off_title": _title(access, service.hand_off_to if service else None),
        "extendable": bool(service and service.extendable),
        "live_cameras": service.live_cameras if service else 9,
        "area": None if i.area is None else {"polygon": i.area.geojson(),
                                             "district_ids": sorted(i.area.district_ids)},
        "trail": [{"lat": p.lat, "lon": p.lon, "at": iso(p.at), "source": p.source}
                  for p in i.trail],
        "links": [{"incident_id": link.other_id, "kind": link.kind, "outgoing": link.outgoing,
                   "reason": link.reason, "at": iso(link.at)}
                  for link in access.incident_links(i.incident_id)],
    }


def _title(access: AccessService, service_id: str | None) -> str | None:
    service = access.policy.services.get(service_id or "")
    return service.title if service else None


def facility_json(facility: Facility) -> dict[str, Any]:
    return {"facility_id": facility.facility_id, "kind": facility.kind, "name": facility.name,
            "lat": facility.lat, "lon": facility.lon, "detail": facility.detail,
            "distance_m": round(facility.distance_m, 1)}


def session_json(state: SessionState, now: datetime) -> dict[str, Any]:
    return {"session_id": state.session_id, "camera_id": state.camera_id, "active": state.active,
            "reason": state.reason, "expires_at": iso(state.expires_at), "now": iso(now)}


def service_json(service: ServicePolicy) -> dict[str, Any]:
    return {"service": service.service_id, "title": service.title,
            "incident_types": sorted(service.incident_types),
            "default_radius_m": service.default_radius_m, "max_radius_m": service.max_radius_m,
            "facilities": service.facilities, "named": service.incident_types_from is not None}


def _number(body: dict[str, Any], key: str, *, required: bool = True) -> float | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError as exc:  # an integer beyond any float
        raise InvalidRequest(f"{key} is out of range") from exc
    if not math.isfinite(number):
        raise InvalidRequest(f"{key} must be a finite number, got {value!r}")
    return number


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{key} must be a string, got {value!r}")
    return value


def _time_query(request: web.Request, key: str) -> datetime | None:
    return _time_text(request.query.get(key, ""), key)


def _time_text(value: str | None, key: str) -> datetime | None:
    text = (value or "").strip()
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidRequest(f"{key} must be an ISO 8601 time, got {text!r}") from exc
    if moment.tzinfo is None:
        raise InvalidRequest(f"{key} must carry a time zone (e.g. 2026-05-01T09:00:00Z)")
    return moment


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _strict_loads(text: str) -> Any:
    return json.loads(text, parse_constant=_no_constant)


def _area(body: dict[str, Any]) -> AreaRequest | None:
    """``area: {polygon: GeoJSON, district_ids: [...]}`` from a report's body, if any."""
    area = body.get("area")
    if area is None:
        return None
    if not isinstance(area, dict):
        raise InvalidRequest("area must be an object {polygon?, district_ids?}")
    districts = area.get("district_ids") or []
    if not isinstance(districts, list) or not all(isinstance(d, str) for d in districts):
        raise InvalidRequest("area.district_ids must be a list of district ids")
    polygon = area.get("polygon")
    if polygon is not None and not isinstance(polygon, dict | str):
        raise InvalidRequest("area.polygon must be a GeoJSON Polygon")
    return AreaRequest(polygon, tuple(districts))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json(loads=_strict_loads)
    except (ValueError, RecursionError) as exc:
        # ValueError: not JSON, not UTF-8, NaN / Infinity, or an integer too long to convert;
        # RecursionError: nested deeper than the parser goes.
        problem = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise InvalidRequest(f"the request body is not JSON: {problem}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def _since(request: web.Request) -> int:
    """The version a follower has: ``Last-Event-ID`` (a reconnecting EventSource) over ``since``."""
    text = request.headers.get("Last-Event-ID", "").strip() or request.query.get("since", "0")
    try:
        since = int(text)
    except ValueError as exc:
        raise InvalidRequest(f"since must be a camera version (a whole number), got {text!r}") from exc
    if since < 0:
        raise InvalidRequest(f"since must not be negative, got {since}")
    return since


class ConsoleApi:
    def __init__(self, access: AccessService, outlines: tuple[DistrictOutline, ...] = (), *,
                 feed: CameraFeed | None = None, metrics: CoreMetrics | None = None) -> None:
        self._access = access
        self._outlines = {o.district_id: o for o in outlines}
        self._feed = feed or CameraFeed(access.registry)
        self._metrics = metrics or CoreMetrics()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/me", self.me),
            web.get("/api/districts", self.districts),
            web.get("/api/overview", self.overview),
            web.get("/api/cameras", self.cameras),
            web.get("/api/cameras/events", self.camera_events),
            web.get("/api/incidents", self.incidents),
            web.post("/api/incidents", self.report_incident),
            web.get("/api/incidents/{incident_id}", self.incident),
            web.post("/api/incidents/{incident_id}/close", self.close_incident),
            web.post("/api/incidents/{incident_id}/move", self.move_incident),
            web.post("/api/incidents/{incident_id}/link", self.link_incident),
            web.post("/api/incidents/{incident_id}/handoff", self.hand_off_incident),
            web.post("/api/incidents/{incident_id}/extend", self.extend_incident),
            web.get("/api/incidents/{incident_id}/cameras", self.incident_cameras),
            web.get("/api/sessions/{session_id}", self.session),
            web.post("/api/sessions/{session_id}/first-frame", self.first_frame),
            web.get("/api/golden-time", self.golden_time),
            web.get("/api/audit", self.audit_search),
            web.get("/api/audit/verify", self.audit_verify),
            web.get("/api/audit/export", self.audit_export),
        ]

    def _caller(self, request: web.Request) -> Caller:
        return authenticate(self._access, request)

    def _now(self) -> datetime:
        return datetime.now(UTC)

    def _in_use(self) -> set[str]:
        """Cameras some incident-backed session is watching right now."""
        return {str(r["camera_id"]) for r in self._access.registry.open_sessions()
                if r["incident_id"]}

    def _report(self, report: IncidentReport) -> dict[str, Any]:
        in_use = self._in_use()
        return {"incident": incident_json(report.incident, self._access, self._now()),
                "cameras": [camera_json(c, in_use) for c in report.cameras],
                "facilities": [facility_json(f) for f in report.facilities]}

    # --- who, where -----------------------------------------------------------------------

    async def me(self, request: web.Request) -> web.Response:
        operator = self._caller(request).operator
        services = []
        if operator.role in VIEW_ROLES:
            # A service that borrows its types (112 emergency dispatch) opens when named: the
            # form offers it as its own group and sends its id.
            services = [service_json(s) for s in self._access.policy.services.values()
                        if operator.agency in s.agencies]
        views = operator.role in VIEW_ROLES
        return web.json_response({
            "operator_id": operator.operator_id, "name": operator.name, "agency": operator.agency,
            "agency_title": self._access.policy.agencies.get(operator.agency, operator.agency),
            "role": operator.role.value, "views_video": views,
            "audits": operator.role == Role.AUDITOR, "reports": services,
            "dispatches": views,
            "preserves_evidence": views and operator.role in self._access.policy.evidence.roles,
        })

    async def districts(self, request: web.Request) -> web.Response:
        self._caller(request)
        known = {d.district_id: d for d in self._access.registry.districts()}
        result = []
        for district_id in sorted(set(known) | set(self._outlines)):
            record, outline = known.get(district_id), self._outlines.get(district_id)
            result.append({
                "district_id": district_id,
                "name": record.name if record else (outline.name if outline else district_id),
                "agent_online": bool(record and record.agent_online),
                "outline": outline.as_json() if outline else [],
            })
        return web.json_response({"districts": result})

    async def overview(self, request: web.Request) -> web.Response:
        """The small things a console polls; cameras come from the snapshot and the stream."""
        caller = self._caller(request)
        now = self._now()
        return web.json_response({
            "now": iso(now),
            "agents": {d.district_id: d.agent_online for d in self._access.registry.districts()},
            "camera_version": self._feed.version,
            "incidents": [incident_json(s, self._access, now)
                          for s in self._access.list_incidents(caller)],
        })

    # --- cameras: a snapshot once, then pushed changes --------------------------------------

    async def cameras(self, request: web.Request) -> web.Response:
        self._caller(request)
        snapshot = await self._feed.snapshot()
        headers = {"Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=snapshot.gzipped, content_type="application/json",
                                headers=headers)
        return web.Response(body=snapshot.body, content_type="application/json", headers=headers)

    async def camera_events(self, request: web.Request) -> web.StreamResponse:
        self._caller(request)
        since = _since(request)
        async with sse_response(request, ping_interval=15) as stream:
            self._feed.followers += 1
            self._metrics.console_streams.inc()
            follow = asyncio.create_task(self._follow(stream, since), name="console-stream")
            closed = asyncio.create_task(stream.wait(), name="console-stream-ping")
            try:
                await asyncio.wait([follow, closed], return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (follow, closed):
                    task.cancel()
                await asyncio.gather(follow, closed, return_exceptions=True)
                self._feed.followers -= 1
                self._metrics.console_streams.dec()
        return stream

    async def _follow(self, stream: EventSourceResponse, since: int) -> None:
        feed = self._feed
        seq, upto, reset = feed.start(since)
        data = None if reset else await feed.catch_up(since, upto)
        if data is None:
            await stream.send(json.dumps({"version": feed.version}), event="reset")
            return
        if data:
            await stream.send(data, id=str(upto), event="cameras")
        await stream.send(json.dumps({"agents": feed.agents}), id=str(max(since, upto)),
                          event="agents")
        while True:
            try:
                events = await feed.next_events(seq)
            except FeedLost:
                await stream.send(json.dumps({"version": feed.version}), event="reset")
                return
            for event in events:
                seq = event.seq
                if event.kind == "reset":
                    await stream.send(event.data, event="reset")
                    return
                if event.kind == "cameras" and event.version <= since:
                    continue  # its snapshot is newer than this push: it has these changes
                await stream.send(event.data, id=str(event.version), event=event.kind)

    # --- incidents ------------------------------------------------------------------------

    async def incidents(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        closed = request.query.get("closed", "") in ("1", "true", "yes")
        now = self._now()
        return web.json_response({"incidents": [
            incident_json(s, self._access, now)
            for s in self._access.list_incidents(caller, include_closed=closed)]})

    async def report_incident(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        body = await _json_body(request)
        incident_type = _text(body, "incident_type")
        if not incident_type:
            raise InvalidRequest("incident_type is required")
        area = _area(body)
        located = area is None or body.get("lat") is not None
        lat, lon = _number(body, "lat", required=located), _number(body, "lon", required=located)
        report = await self._access.report_incident(
            caller, incident_type=incident_type, lat=lat, lon=lon, area=area,
            radius_m=_number(body, "radius_m", required=False),
            external_ref=_text(body, "external_ref") or "",
            legal_basis=_text(body, "legal_basis") or None,
            service=_text(body, "service") or None, clamp=body.get("clamp") is True)
        incident_id = report.incident.incident.incident_id
        return web.json_response({**self._report(report), "existing": report.existing},
                                 status=200 if report.existing else 201,
                                 headers={"Location": f"/api/incidents/{incident_id}"})

    async def incident(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        report = self._access.get_incident(caller, request.match_info["incident_id"])
        return web.json_response(self._report(report))

    async def close_incident(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        body = await _json_body(request)
        stored = await self._access.close_incident(caller, request.match_info["incident_id"],
                                                   _text(body, "reason") or "")
        return web.json_response({"incident": incident_json(stored, self._access, self._now())})

    async def move_incident(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        body = await _json_body(request)
        lat, lon = _number(body, "lat"), _number(body, "lon")
        assert lat is not None and lon is not None
        at = _time_text(_text(body, "at"), "at")
        report = await self._access.move_incident(
            caller, request.match_info["incident_id"], lat, lon, at=at,
            source=_text(body, "source") or "operator")
        return web.json_response(self._report(report))

    async def link_incident(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        body = await _json_body(request)
        one, other = await self._access.link_incidents(
            caller, request.match_info["incident_id"], _text(body, "other_incident_id") or "",
            _text(body, "reason") or "")
        now = self._now()
        return web.json_response({"incident": incident_json(one, self._access, now),
                                  "other": incident_json(other, self._access, now)})

    async def hand_off_incident(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        body = await _json_body(request)
        report = await self._access.hand_off_incident(
            caller, request.match_info["incident_id"], _text(body, "reason") or "",
            incident_type=_text(body, "incident_type") or None)
        return web.json_response({**self._report(report), "existing": report.existing},
                                 status=200 if report.existing else 201)

    async def extend_incident(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        body = await _json_body(request)
        minutes = body.get("minutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int):
            raise InvalidRequest(f"minutes must be a whole number, got {minutes!r}")
        stored = await self._access.extend_incident(
            caller, request.match_info["incident_id"], minutes, _text(body, "reason") or "")
        return web.json_response({"incident": incident_json(stored, self._access, self._now())})

    async def incident_cameras(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError as exc:
            raise InvalidRequest("offset and limit must be whole numbers") from exc
        cameras, total = self._access.incident_cameras(
            caller, request.match_info["incident_id"], offset, limit)
        in_use = self._in_use()
        return web.json_response({"cameras": [camera_json(c, in_use) for c in cameras],
                                  "offset": offset, "total": total,
                                  "more": offset + len(cameras) < total})

    # --- sessions -------------------------------------------------------------------------

    async def session(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        state = self._access.session_state(caller, request.match_info["session_id"])
        return web.json_response(session_json(state, self._now()))

    async def first_frame(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        body = await _json_body(request)
        row = self._access.first_frame(caller, request.match_info["session_id"],
                                       _text(body, "client") or "other")
        return web.json_response({"recorded": row is not None,
                                  "report_to_first_frame_ms": row and row.report_to_frame_ms,
                                  "grant_to_first_frame_ms": row and row.grant_to_frame_ms})

    async def golden_time(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if caller.operator.role not in (*VIEW_ROLES, Role.AUDITOR, Role.ADMIN):
            raise AccessDenied(f"role {caller.operator.role} may not read golden-time figures")
        since, until = _time_query(request, "since"), _time_query(request, "until")
        store = self._access.golden_time
        if request.query.get("format", "json") == "csv":
            return web.Response(text=store.export_csv(since, until), content_type="text/csv",
                                headers={"Content-Disposition":
                                         'attachment; filename="golden-time.csv"'})
        return web.json_response({"days": store.daily(since, until)})

    # --- audit ----------------------------------------------------------------------------

    def _auditor(self, request: web.Request) -> Caller:
        caller = self._caller(request)
        self._access.require_auditor(caller)
        return caller

    async def audit_search(self, request: web.Request) -> web.Response:
        self._auditor(request)
        query = request.query
        try:
            limit = int(query.get("limit", "200"))
        except ValueError as exc:
            raise InvalidRequest(f"limit must be a whole number, got {query['limit']!r}") from exc
        if not 1 <= limit <= audit_log.MAX_SEARCH_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {audit_log.MAX_SEARCH_LIMIT}")
        try:
            records = await asyncio.to_thread(
                audit_log.search, self._access.audit.db_path,
                operator_id=query.get("operator", "").strip() or None,
                camera_id=query.get("camera", "").strip() or None,
                incident_id=query.get("incident", "").strip() or None,
                action=query.get("action", "").strip() or None,
                since=_time_query(request, "since"), until=_time_query(request, "until"),
                limit=limit)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
        return web.json_response({"records": [r.to_dict() for r in records],
                                  "limit": limit, "more": len(records) == limit})

    async def audit_verify(self, request: web.Request) -> web.Response:
        self._auditor(request)
        report = await asyncio.to_thread(audit_log.verify, self._access.audit.db_path,
                                         self._access.audit.public_key)
        return web.json_response({
            "ok": report.ok, "records": report.records, "head_seq": report.head_seq,
            "head_hash": report.head_hash, "checkpoints": report.checkpoints,
            "last_checkpoint_seq": report.last_checkpoint_seq, "key_trusted": report.key_trusted,
            "unattested": report.unattested, "broken_seq": report.broken_seq,
            "problem": report.problem, "problems": [list(p) for p in report.problems],
            "warnings": list(report.warnings), "checked_at": iso(self._now()),
        })

    async def audit_export(self, request: web.Request) -> web.Response:
        caller = self._auditor(request)
        fmt = request.query.get("format", "csv")
        if fmt not in ("csv", "json"):
            raise InvalidRequest(f"format must be csv or json, got {fmt!r}")
        since, until = _time_query(request, "since"), _time_query(request, "until")
        content = await asyncio.to_thread(audit_log.export, self._access.audit.db_path,
                                          since, until, fmt)  # type: ignore[arg-type]
        count = audit_log.count_records(content, fmt)
        await self._access.record_export(caller, since, until, fmt, count)
        stamp = self._now().strftime("%Y%m%dT%H%M%SZ")
        return web.Response(
            text=content, content_type="text/csv" if fmt == "csv" else "application/json",
            headers={"Content-Disposition": f'attachment; filename="audit-{stamp}.{fmt}"'})
