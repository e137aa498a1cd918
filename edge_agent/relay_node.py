"""The cloud relay as a process (``safetynet relay run``): the agent's own code in relay mode.

A relay runs in the city's cloud and is driven by the core over MQTT, on its own subtree
``safetynet/v1/relays/<relay id>/`` (docs/cloud-relay.md):

- it **registers** by publishing a ``SignedRelayStatus`` (retained; its last will, signed at
  start, says offline) signed by its own Ed25519 key, whose public half the core holds;
- ``RelayStart`` opens one ``CloudRelay`` for a camera and an incident: the relay makes its one
  recv-only offer upstream and answers with it; the core takes it to the district's agent under a
  relay grant and brings back the agent's answer in ``RelayAnswer``; the relay answers that once
  the first picture has come down;
- a viewer's ``SessionOffer`` is checked as the agent checks it — the core's signature, the
  camera's district, camera, session, validity, replay — and also that its grant is for the
  incident the camera is relayed for; then it is answered from the relay's feed;
- ``SessionClose`` ends a viewer; every viewer's start and end goes to the core as a
  ``SessionEvent`` on the relay's own topic.

A relay stops (every viewer closed) when the district ends its upstream — the incident closed, or
its grant was revoked — and when its last viewer leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf.message import DecodeError

from edge_agent.camera_feed import FeedSubscription
from edge_agent.cloud_relay import CloudRelay
from edge_agent.exceptions import ConfigError, GrantRejected, OfferRejected, SourceError
from edge_agent.grant_check import GrantVerifier
from edge_agent.status_reporter import now_timestamp
from edge_agent.viewer_session import ViewerSession
from protos import topics
from protos.safetynet.v1 import mqtt_pb2
from protos.topics import Kind, check_id
from runtime.background import BackgroundTasks
from runtime.exceptions import LinkDown
from runtime.mqtt_link import BrokerSettings, LastWill, MqttLink
from runtime.signing_keys import load_signing_key
from runtime.webrtc import WebRtcSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RelayConfig:
    """A relay's TOML::

        [relay]
        id = "relay-1"
        identity_key = "relay-1.key"   # its Ed25519 key; the core's [relays] holds relay-1.pub
        max_viewers = 256               # viewers of all relayed cameras together
        start_timeout_seconds = 10      # upstream offer, and first picture after the answer

        [grants]
        public_key = "grant-signing.pub"   # the core's grant key, as an agent's

        [broker]   # as an agent's
        [webrtc]   # as an agent's
    """

    relay_id: str
    broker: BrokerSettings
    webrtc: WebRtcSettings
    grant_public_key: Path
    identity_key: Path
    max_viewers: int = 256
    start_timeout_seconds: float = 10.0

    @classmethod
    def from_toml(cls, path: Path) -> RelayConfig:
        """Read and check ``path``; every problem is a ConfigError naming the file and key."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(str(path), "file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
        try:
            return cls.from_mapping(data, path.parent)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(str(path), str(exc)) from exc

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> RelayConfig:
        unknown = set(data) - {"relay", "grants", "broker", "webrtc"}
        if unknown:
            raise ValueError(f"unknown section(s): {', '.join(sorted(unknown))}")
        relay = data.get("relay")
        if not isinstance(relay, dict):
            raise ValueError("[relay] is required, with id and identity_key")
        if set(relay) - {"id", "identity_key", "max_viewers", "start_timeout_seconds"}:
            raise ValueError(f"relay: unknown key(s) {', '.join(sorted(set(relay) - {'id', 'identity_key', 'max_viewers', 'start_timeout_seconds'}))}")
        relay_id = relay.get("id")
        if not isinstance(relay_id, str):
            raise ValueError("relay.id must be a string")
        check_id(relay_id, "relay.id")
        key = relay.get("identity_key")
        public_key = data.get("grants", {}).get("public_key")
        if not isinstance(key, str) or not isinstance(public_key, str):
            raise ValueError("relay.identity_key and grants.public_key must be file paths")
        max_viewers = relay.get("max_viewers", 256)
        if isinstance(max_viewers, bool) or not isinstance(max_viewers, int) or max_viewers < 1:
            raise ValueError(f"relay.max_viewers must be a whole number >= 1, got {max_viewers!r}")
        timeout = relay.get("start_timeout_seconds", 10.0)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"relay.start_timeout_seconds must be positive, got {timeout!r}")
        return cls(relay_id=relay_id,
                   broker=BrokerSettings.from_mapping(data.get("broker", {}), base),
                   webrtc=WebRtcSettings.from_mapping(data.get("webrtc", {})),
                   grant_public_key=(base / public_key).resolve(),
                   identity_key=(base / key).resolve(), max_viewers=max_viewers,
                   start_timeout_seconds=float(timeout))


def signed_status(relay_id: str, key: Ed25519PrivateKey, *, online: bool) -> bytes:
    """A relay's registration (or its last will), signed by its own key."""
    status = mqtt_pb2.RelayStatus(relay_id=relay_id, online=online, at=now_timestamp())
    body = status.SerializeToString()
    return mqtt_pb2.SignedRelayStatus(status=body, signature=key.sign(body)).SerializeToString()


@dataclass
class RelayedCamera:
    """One camera this relay serves, for one incident, and the state of its upstream."""

    relay: CloudRelay
    district_id: str
    incident_id: str
    upstream_session_id: str
    grants: GrantVerifier
    offer: asyncio.Future[str]
    answer: asyncio.Future[tuple[str, str]]
    hold: FeedSubscription | None = None  # keeps the upstream open until the first viewer


class RelayNode:
    """The relay process: an async context manager, like an agent."""

    def __init__(self, config: RelayConfig) -> None:
        self.config = config
        self.cameras: dict[str, RelayedCamera] = {}
        self._key = load_signing_key(config.identity_key)
        self._link: MqttLink | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._tasks = BackgroundTasks(f"relay:{config.relay_id}")
        self._log = log.bind(relay=config.relay_id)
        # A grant issued before this process started is refused (replay across a restart).
        self._started_at = datetime.now(UTC)

    @property
    def viewers(self) -> int:
        return sum(len(c.relay.sessions) for c in self.cameras.values())

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            link = MqttLink(
                self.config.broker, client_id=f"relay-{self.config.relay_id}",
                subscriptions=[topics.relay_route(Kind.SIGNAL_REQUEST, self.config.relay_id)],
                on_message=self._on_message, on_connect=self._say_online,
                will=LastWill(topics.relay_route(Kind.RELAY_STATUS, self.config.relay_id),
                              signed_status(self.config.relay_id, self._key, online=False)))
            self._link = await stack.enter_async_context(link)
            stack.callback(setattr, self, "_link", None)
            stack.push_async_callback(self._say_offline)
            self._tasks = await stack.enter_async_context(
                BackgroundTasks(f"relay:{self.config.relay_id}"))
            stack.push_async_callback(self._stop_all, "relay stopping")
            self._stack = stack.pop_all()
        self._log.info("relay started", broker=self.config.broker.describe())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
            self._log.info("relay stopped")

    async def _stop_all(self, reason: str) -> None:
        for camera in list(self.cameras.values()):
            await camera.relay.close()
        self.cameras.clear()

    async def _say_online(self) -> None:
        assert self._link is not None
        await self._link.send(topics.relay_route(Kind.RELAY_STATUS, self.config.relay_id),
                              signed_status(self.config.relay_id, self._key, online=True))

    async def _say_offline(self) -> None:
        if self._link is None:
            return
        with contextlib.suppress(LinkDown):  # then the broker's last will says it for us
            await self._link.send(topics.relay_route(Kind.RELAY_STATUS, self.config.relay_id),
                                  signed_status(self.config.relay_id, self._key, online=False))

    # --- signalling -------------------------------------------------------------------------

    async def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            return
        try:
            request = mqtt_pb2.SignalRequest.FromString(bytes(payload))
        except DecodeError as exc:
            self._log.warning("rejected malformed signal request", error=str(exc))
            return
        if not request.request_id or request.WhichOneof("body") is None:
            self._log.warning("rejected signal request without request id or body")
            return
        self._tasks.start(self._handle(request), name=f"relay-signal:{request.request_id}")

    async def _handle(self, request: mqtt_pb2.SignalRequest) -> None:
        response = await self.answer(request)
        if self._link is None:
            return
        try:
            await self._link.send(topics.relay_route(Kind.SIGNAL_RESPONSE, self.config.relay_id),
                                  response.SerializeToString())
        except LinkDown as exc:
            self._log.warning("signal response lost, link down", why=exc.why)

    async def answer(self, request: mqtt_pb2.SignalRequest) -> mqtt_pb2.SignalResponse:
        """The relay's answer to one request from the core (or a failure with its code)."""
        response = mqtt_pb2.SignalResponse(request_id=request.request_id)
        body = request.WhichOneof("body")
        try:
            if body == "relay_start":
                response.session_id = request.relay_start.upstream_session_id
                response.relay_offer = await self._start(request.relay_start)
            elif body == "relay_answer":
                response.session_id = request.relay_answer.upstream_session_id
                await self._answered(request.relay_answer)
                response.closed = False  # acknowledged: the relayed stream is live
            elif body == "offer":
                response.session_id = request.offer.session_id
                response.sdp_answer = await self._add_viewer(request.offer)
            elif body == "close":
                response.session_id = request.close.session_id
                await self._close_viewer(request.close)
                response.closed = True
            else:
                raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_BAD_OFFER,
                                    f"a relay does not handle {body!r} requests")
        except OfferRejected as exc:
            self._log.info("relay request refused", body=body,
                           code=mqtt_pb2.SignalError.Name(exc.code), why=exc.message)
            response.error.code = exc.code
            response.error.message = exc.message
        except Exception:  # noqa: BLE001 - answer rather than leave the core waiting for its timeout
            self._log.exception("relay request failed", body=body)
            response.error.code = mqtt_pb2.SIGNAL_ERROR_INTERNAL
            response.error.message = "the relay failed to handle the request; see its log"
        return response

    async def _start(self, start: mqtt_pb2.RelayStart) -> str:
        """Open the camera's one upstream; its SDP offer, for the core to take to the district."""
        for value, what in ((start.camera_id, "camera_id"), (start.district_id, "district_id"),
                            (start.upstream_session_id, "upstream_session_id")):
            if not value:
                raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_BAD_OFFER, f"relay start has no {what}")
        existing = self.cameras.get(start.camera_id)
        if existing is not None:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_CAPACITY,
                                f"camera {start.camera_id!r} is already relayed here for incident "
                                f"{existing.incident_id!r}")
        loop = asyncio.get_running_loop()
        offer: asyncio.Future[str] = loop.create_future()
        answer: asyncio.Future[tuple[str, str]] = loop.create_future()

        async def open_upstream(sdp_offer: str) -> tuple[str, str]:
            if offer.done():  # the feed retrying: this relay's one upstream is gone
                raise SourceError(start.camera_id, "stopped", "the relay's upstream ended")
            offer.set_result(sdp_offer)
            return await answer

        async def close_upstream(session_id: str) -> None:
            return None  # our peer connection closing ends the session at the district

        relay = CloudRelay(start.camera_id, webrtc=self.config.webrtc, open_upstream=open_upstream,
                           close_upstream=close_upstream, on_viewer_closed=self._viewer_closed)
        camera = RelayedCamera(
            relay=relay, district_id=start.district_id, incident_id=start.incident_id,
            upstream_session_id=start.upstream_session_id, offer=offer, answer=answer,
            grants=GrantVerifier.from_pem_file(self.config.grant_public_key, start.district_id,
                                               lambda: datetime.now(UTC),
                                               issued_after=self._started_at))
        self.cameras[start.camera_id] = camera
        await relay.__aenter__()
        camera.hold = relay.feed.subscribe(viewer=False)  # starts the upstream's offer
        self._tasks.start(self._watch(camera), name=f"relay-watch:{start.camera_id}")
        try:
            async with asyncio.timeout(self.config.start_timeout_seconds):
                sdp = await asyncio.shield(offer)
        except TimeoutError as exc:
            await relay.stop("the upstream offer was not made in time")
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_INTERNAL,
                                "the relay could not make its upstream offer in time") from exc
        self._log.info("relay starting", camera=start.camera_id, incident=start.incident_id,
                       upstream=start.upstream_session_id)
        self._tasks.start(self._unless_answered(camera), name=f"relay-answer:{start.camera_id}")
        return sdp

    async def _unless_answered(self, camera: RelayedCamera) -> None:
        """A start the core never completes (it died, or the district refused) is dropped."""
        try:
            async with asyncio.timeout(self.config.start_timeout_seconds * 2):
                await asyncio.shield(camera.answer)
        except TimeoutError:
            await camera.relay.stop("the core never brought the district's answer")

    async def _answered(self, answered: mqtt_pb2.RelayAnswer) -> None:
        """The district's answer came back: wait until the first picture is here."""
        camera = self.cameras.get(answered.camera_id)
        if camera is None or camera.upstream_session_id != answered.upstream_session_id:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_UNKNOWN_SESSION,
                                f"no relay start for camera {answered.camera_id!r} and upstream "
                                f"session {answered.upstream_session_id!r}")
        if not camera.answer.done():
            camera.answer.set_result((answered.sdp_answer, answered.upstream_session_id))
        live = asyncio.ensure_future(camera.relay.live.wait())
        stopped = asyncio.ensure_future(camera.relay.stopped.wait())
        try:
            async with asyncio.timeout(self.config.start_timeout_seconds):
                await asyncio.wait((live, stopped), return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError as exc:
            await camera.relay.stop("no picture from the district in time")
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_CAMERA_OFFLINE,
                                "no picture came from the district in time") from exc
        finally:
            live.cancel()
            stopped.cancel()
        if not camera.relay.live.is_set():
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_CAMERA_OFFLINE,
                                "the district's stream ended before its first picture")

    async def _watch(self, camera: RelayedCamera) -> None:
        """Forget a relay once it has stopped (the district ended it, or it emptied)."""
        await camera.relay.stopped.wait()
        await camera.relay.close()
        if self.cameras.get(camera.relay.camera_id) is camera:
            del self.cameras[camera.relay.camera_id]
        self._log.info("relay ended", camera=camera.relay.camera_id, incident=camera.incident_id)

    async def _add_viewer(self, offer: mqtt_pb2.SessionOffer) -> str:
        camera = self.cameras.get(offer.camera_id)
        if camera is None or camera.relay.stopped.is_set():
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_UNKNOWN_CAMERA,
                                f"camera {offer.camera_id!r} is not relayed here")
        if not offer.session_id:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_BAD_OFFER, "the offer has no session id")
        if self.viewers >= self.config.max_viewers:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_CAPACITY,
                                f"the relay already serves {self.config.max_viewers} viewers")
        try:
            claims = camera.grants.check(offer.grant, offer.camera_id, offer.session_id)
        except GrantRejected as exc:
            raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED, exc.reason) from exc
        if claims.for_relay or claims.incident_id != camera.incident_id:
            raise OfferRejected(
                mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED,
                f"grant is for incident {claims.incident_id or '(none)'!r}; this relay serves "
                f"camera {offer.camera_id!r} for incident {camera.incident_id!r} only")
        expires_at = claims.expires_at
        if offer.HasField("expires_at"):
            try:
                expires_at = min(expires_at, offer.expires_at.ToDatetime(tzinfo=UTC))
            except (ValueError, OverflowError) as exc:
                raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_BAD_OFFER,
                                    f"the offer's expires_at is not a valid time: {exc}") from exc
        answer = await camera.relay.add_viewer(offer.session_id, offer.sdp_offer, expires_at)
        if camera.hold is not None:  # the first viewer keeps the feed open from now on
            camera.hold.unsubscribe()
            camera.hold = None
        session = camera.relay.sessions.get(offer.session_id)
        if session is not None:
            await self._publish_event(session, mqtt_pb2.SessionEvent.KIND_STARTED, "")
        return answer

    async def _close_viewer(self, close: mqtt_pb2.SessionClose) -> None:
        for camera in self.cameras.values():
            session = camera.relay.sessions.get(close.session_id)
            if session is not None:
                await session.close(close.reason or "closed by core")
                return
        raise OfferRejected(mqtt_pb2.SIGNAL_ERROR_UNKNOWN_SESSION,
                            f"session {close.session_id!r} is not open at this relay")

    async def _viewer_closed(self, session: ViewerSession, reason: str) -> None:
        await self._publish_event(session, mqtt_pb2.SessionEvent.KIND_ENDED, reason)
        camera = self.cameras.get(session.camera_id)
        if camera is not None and not camera.relay.sessions and camera.hold is None:
            # The last viewer left: the upstream is not kept for nobody.
            self._tasks.start(camera.relay.stop("last viewer left"),
                              name=f"relay-empty:{session.camera_id}")

    async def _publish_event(self, session: ViewerSession, kind: int, reason: str) -> None:
        event = mqtt_pb2.SessionEvent(
            session_id=session.session_id, camera_id=session.camera_id, kind=kind,  # type: ignore[arg-type]
            reason=reason, at=now_timestamp(), duration_seconds=session.duration_seconds,
            bytes_sent=session.bytes_sent)
        if self._link is None:
            return
        try:
            await self._link.send(topics.relay_route(Kind.SESSION_EVENTS, self.config.relay_id),
                                  event.SerializeToString())
        except LinkDown as exc:
            self._log.warning("session event not published", session=session.session_id,
                              why=exc.why)


async def run_relay(config: RelayConfig, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set (the CLI sets it on SIGINT/SIGTERM)."""
    async with RelayNode(config):
        await stop.wait()
