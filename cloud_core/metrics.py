"""The core's Prometheus metrics, served at ``/metrics`` on its HTTP port.

One ``CoreMetrics`` per core, each with its own ``CollectorRegistry`` (several cores may run in one
process, as in the tests). Gauges that need the registry (cameras by state, open sessions) are
computed at scrape time on the registry's reader connection, off the event loop.

    safetynet_core_sessions_open                     viewing sessions not yet closed
    safetynet_core_open_session_seconds              OpenSession latency (gRPC), histogram
    safetynet_core_grpc_seconds{method}              every gRPC call's latency, histogram
    safetynet_core_statuses_ingested_total           camera statuses written to the registry
    safetynet_core_statuses_rejected_total{kind}     malformed status messages, not written
    safetynet_core_messages_dropped_total{reason}    messages lost: core_queue_full, ingest_backlog,
                                                     registry_error, writer_failed
    safetynet_core_ingest_batch_seconds              one registry transaction of statuses
    safetynet_core_cameras{state}                    cameras by effective state
    safetynet_core_event_loop_lag_seconds            how late the loop runs a timer, histogram
    safetynet_core_event_loop_lag_max_seconds        the worst lag in the last window
    safetynet_core_console_streams                   console change streams (SSE) connected
    safetynet_core_sign_in_failures_total{key}       wrong tokens, counted per source address and
                                                     per operator the token names (the alert count)
    safetynet_core_sign_in_throttled_total{key}      attempts refused while that key had to wait
    safetynet_core_sessions_preempted_total          standing sessions ended for an emergency's slot
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class CoreMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.open_session_seconds = Histogram(
            "safetynet_core_open_session_seconds", "OpenSession latency", registry=r,
            buckets=_LATENCY_BUCKETS)
        self.grpc_seconds = Histogram(
            "safetynet_core_grpc_seconds", "gRPC call latency", ["method"], registry=r,
            buckets=_LATENCY_BUCKETS)
        self.statuses_ingested = Counter(
            "safetynet_core_statuses_ingested", "Camera statuses written", registry=r)
        self.statuses_rejected = Counter(
            "safetynet_core_statuses_rejected", "Malformed status messages", ["kind"], registry=r)
        self.messages_dropped = Counter(
            "safetynet_core_messages_dropped", "Messages lost, by why", ["reason"], registry=r)
        self.ingest_batch_seconds = Histogram(
            "safetynet_core_ingest_batch_seconds", "One status transaction", registry=r,
            buckets=_LATENCY_BUCKETS)
        self.loop_lag = Histogram(
            "safetynet_core_event_loop_lag_seconds", "Event loop lag", registry=r,
            buckets=_LAG_BUCKETS)
        self.loop_lag_max = Gauge(
            "safetynet_core_event_loop_lag_max_seconds", "Worst loop lag, last window", registry=r)
        self.console_streams = Gauge(
            "safetynet_core_console_streams", "Console change streams connected", registry=r)
        self.leader = Gauge(
            "safetynet_core_leader",
            "1 while this replica leads (sweeps grants, signs audit checkpoints), else 0",
            registry=r)

    def watch_leadership(self, is_leader: Callable[[], bool]) -> None:
        """Read whether this replica leads at scrape time."""
        self.leader.set_function(lambda: float(is_leader()))

    def watch_access(self, access: AccessCounts) -> None:
        """Scrape-time counters of failed and throttled sign-ins (by key kind) and of
        preempted sessions."""
        self.registry.register(_AccessCollector(access))

    def watch_registry(self, cameras_by_state: Callable[[], dict[str, int]],
                       sessions_open: Callable[[], int]) -> None:
        """Scrape-time gauges read from the registry (called in the scraping thread)."""
        self.registry.register(_RegistryCollector(cameras_by_state, sessions_open))

    def render(self) -> bytes:
        """The text exposition; blocking (registry reads): call it off the loop."""
        return generate_latest(self.registry)


class _RegistryCollector(Collector):
    def __init__(self, cameras_by_state: Callable[[], dict[str, int]],
                 sessions_open: Callable[[], int]) -> None:
        self._cameras_by_state = cameras_by_state
        self._sessions_open = sessions_open

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        cameras = GaugeMetricFamily("safetynet_core_cameras", "Cameras by effective state",
                                    labels=["state"])
        counts = {"online": 0, "offline": 0, **self._cameras_by_state()}
        for state, count in sorted(counts.items()):
            cameras.add_metric([state], count)
        yield cameras
        yield GaugeMetricFamily("safetynet_core_sessions_open", "Viewing sessions open",
                                value=self._sessions_open())


class AccessCounts(Protocol):
    """What ``AccessService`` counts for alerts."""

    @property
    def sign_in_failures(self) -> Mapping[str, int]: ...
    @property
    def sign_in_throttled(self) -> Mapping[str, int]: ...
    @property
    def sessions_preempted(self) -> int: ...


class _AccessCollector(Collector):
    def __init__(self, access: AccessCounts) -> None:
        self._access = access

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        for name, help_text, counts in (
                ("safetynet_core_sign_in_failures", "Failed sign-ins",
                 self._access.sign_in_failures),
                ("safetynet_core_sign_in_throttled", "Sign-ins refused while throttled",
                 self._access.sign_in_throttled)):
            family = CounterMetricFamily(name, help_text, labels=["key"])
            for key in ("source", "operator"):
                family.add_metric([key], counts.get(key, 0))
            yield family
        yield CounterMetricFamily("safetynet_core_sessions_preempted",
                                  "Standing sessions preempted by emergencies",
                                  value=self._access.sessions_preempted)


class GrpcTimer(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Times every unary gRPC call; OpenSession also into its own histogram."""

    def __init__(self, metrics: CoreMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary
        histogram = self._metrics.grpc_seconds.labels(method=method)
        session = self._metrics.open_session_seconds if method == "OpenSession" else None

        async def timed(request: Any, context: Any) -> Any:
            started = time.perf_counter()
            try:
                return await inner(request, context)
            finally:
                elapsed = time.perf_counter() - started
                histogram.observe(elapsed)
                if session is not None:
                    session.observe(elapsed)

        return grpc.unary_unary_rpc_method_handler(
            timed, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)
