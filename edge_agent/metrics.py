"""The agent's Prometheus metrics, served on a loopback port (``[metrics] port`` in its config).

Values are read from the agent's own state when Prometheus scrapes, never counted on the hot
path, so an idle district of thousands of cameras pays nothing for them between scrapes. A
camera nobody watches has no viewers series (absent means 0): 2,720 zero lines made every scrape
of an idle district cost ~50 ms of the agent's loop.

    safetynet_agent_probe_cycle_seconds       the last full pass over every idle camera
    safetynet_agent_probes_in_flight          probes under way (answering or waiting)
    safetynet_agent_probes_started_total      probes started since the agent started
    safetynet_agent_probe_slots_lent_total    probes that waited on a silent camera
    safetynet_agent_cameras{state}            cameras by state: online, offline
    safetynet_agent_cameras_streaming         cameras being pulled for a viewer now
    safetynet_agent_camera_viewers{camera}    viewers of each camera that has any
    safetynet_agent_sessions                  viewer sessions open
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Protocol, Self

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT = 5.0


class ProberView(Protocol):
    @property
    def last_cycle_seconds(self) -> float | None: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def probes_started(self) -> int: ...
    @property
    def slots_lent(self) -> int: ...


class FeedView(Protocol):
    @property
    def viewers(self) -> int: ...
    @property
    def streaming(self) -> bool: ...


class AgentCollector(Collector):
    """Reads the prober, the feeds and the cameras' published states at scrape time."""

    def __init__(self, district_id: str, prober: ProberView, feeds: Mapping[str, FeedView],
                 camera_states: Callable[[], Iterable[str]], sessions: Callable[[], int]) -> None:
        self._district = district_id
        self._prober = prober
        self._feeds = feeds
        self._camera_states = camera_states
        self._sessions = sessions

    def collect(self) -> Iterable[Metric]:
        labels = ["district"]
        cycle = GaugeMetricFamily("safetynet_agent_probe_cycle_seconds",
                                  "Seconds the last full probe cycle over idle cameras took",
                                  labels=labels)
        if self._prober.last_cycle_seconds is not None:
            cycle.add_metric([self._district], self._prober.last_cycle_seconds)
        yield cycle
        yield _gauge("safetynet_agent_probes_in_flight", "Probes under way",
                     self._district, self._prober.in_flight)
        started = CounterMetricFamily("safetynet_agent_probes_started", "Probes started",
                                      labels=labels)
        started.add_metric([self._district], self._prober.probes_started)
        yield started
        lent = CounterMetricFamily("safetynet_agent_probe_slots_lent",
                                   "Probes that waited on a silent camera outside the limit",
                                   labels=labels)
        lent.add_metric([self._district], self._prober.slots_lent)
        yield lent
        states = collections.Counter(self._camera_states())
        by_state = GaugeMetricFamily("safetynet_agent_cameras", "Cameras by state",
                                     labels=["district", "state"])
        for state in ("online", "offline"):
            by_state.add_metric([self._district, state], states.get(state, 0))
        yield by_state
        yield _gauge("safetynet_agent_cameras_streaming", "Cameras pulled for a viewer now",
                     self._district, sum(1 for f in self._feeds.values() if f.streaming))
        viewers = GaugeMetricFamily("safetynet_agent_camera_viewers",
                                    "Viewers of each camera that has any",
                                    labels=["district", "camera"])
        for camera_id, feed in self._feeds.items():
            if feed.viewers:
                viewers.add_metric([self._district, camera_id], feed.viewers)
        yield viewers
        yield _gauge("safetynet_agent_sessions", "Viewer sessions open", self._district,
                     self._sessions())


def _gauge(name: str, documentation: str, district: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation, labels=["district"])
    gauge.add_metric([district], value)
    return gauge


class MetricsServer:
    """``GET /metrics`` on 127.0.0.1:``port`` (0: any free port); an async context manager.

    A few lines of HTTP/1.0 on asyncio rather than a web framework: Prometheus asks for one
    path, and the agent stays ~10 MB lighter without one.
    """

    def __init__(self, collector: Collector, port: int, host: str = "127.0.0.1") -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}/metrics"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("metrics serving", url=self.url)

    async def close(self) -> None:
        """Stop serving; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = [*head.split(b" ", 2), b"", b""][:2]
            if method == b"GET" and path.split(b"?", 1)[0] == b"/metrics":
                status, body, kind = b"200 OK", generate_latest(self.registry), CONTENT_TYPE
            else:
                status, body, kind = b"404 Not Found", b"GET /metrics\n", "text/plain"
            writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Type: " + kind.encode()
                         + b"\r\nContent-Length: " + str(len(body)).encode()
                         + b"\r\nConnection: close\r\n\r\n" + body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            pass  # a scraper that hung up or sent no request: nothing to answer
        finally:
            writer.close()
