"""Failed sign-ins, throttled and on the record.

Every bearer token is checked through ``AccessService.authenticate``. After ``free_failures``
wrong tokens from one source address (or for one known, disabled operator), that source must
wait before it may try again: 1 s, then 2, 4, 8 … up to ``max_delay`` (exponential backoff).
While it waits every attempt is refused at once, before any token is looked up
(``SignInThrottled``: gRPC RESOURCE_EXHAUSTED, HTTP 429 with Retry-After). A success clears the
source's count.

Failures go on the audit record, rate-limited so a flood cannot flood the log: at most one
``auth.fail`` record per source per ``record_every`` seconds (carrying how many failures it
stands for), and at most ``max_records_per_minute`` in all; what is over the cap is counted in
the next record. ``failures_total`` and ``throttled_total`` are the alert counters (metrics read
them; there is no Prometheus client in the core yet).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from cloud_core.audit import AuditAction, AuditEntry, AuditOutcome
from cloud_core.exceptions import SignInThrottled

MAX_TRACKED: Final = 100_000


@dataclass(slots=True)
class _Source:
    failures: int = 0
    locked_until: float = 0.0
    unrecorded: int = 0
    last_recorded: float = float("-inf")
    last_seen: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ThrottleSettings:
    free_failures: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0
    record_every: float = 60.0
    max_records_per_minute: int = 60


def source_key(peer: str) -> str:
    """The address part of a gRPC peer (``ipv4:1.2.3.4:5678``) or an HTTP remote, port-less."""
    if peer.startswith("ipv4:"):
        return peer[5:].rsplit(":", 1)[0]
    if peer.startswith("ipv6:"):
        return peer[5:].rsplit(":", 1)[0].strip("[]")
    return peer.removeprefix("unix:") or "unknown"


@dataclass
class SignInThrottle:
    """Per-source (and per-operator) failure counts, lockouts and their audit entries."""

    settings: ThrottleSettings = field(default_factory=ThrottleSettings)
    clock: Callable[[], float] = time.monotonic
    failures_total: int = 0
    throttled_total: int = 0
    _sources: dict[str, _Source] = field(default_factory=dict)
    _recorded: list[float] = field(default_factory=list)

    def check(self, key: str) -> None:
        """SignInThrottled while ``key`` must wait."""
        source = self._sources.get(key)
        now = self.clock()
        if source is not None and source.locked_until > now:
            self.throttled_total += 1
            source.unrecorded += 1
            raise SignInThrottled(source.locked_until - now)

    def failed(self, key: str) -> None:
        """One more wrong token from ``key``; it may have to wait before the next."""
        now = self.clock()
        if key not in self._sources and len(self._sources) >= MAX_TRACKED:
            self._forget_oldest()
        source = self._sources.setdefault(key, _Source())
        source.failures += 1
        source.unrecorded += 1
        source.last_seen = now
        self.failures_total += 1
        over = source.failures - self.settings.free_failures + 1
        if over > 0:
            delay = min(self.settings.base_delay * 2 ** (over - 1), self.settings.max_delay)
            source.locked_until = now + delay

    def succeeded(self, key: str) -> None:
        source = self._sources.get(key)
        if source is not None:
            source.failures = 0
            source.locked_until = 0.0

    def due_records(self) -> list[AuditEntry]:
        """The ``auth.fail`` entries to write now (the sweeper writes them every second)."""
        now = self.clock()
        self._recorded = [t for t in self._recorded if now - t < 60.0]
        entries: list[AuditEntry] = []
        for key, source in self._sources.items():
            if source.unrecorded == 0 or now - source.last_recorded < self.settings.record_every:
                continue
            if len(self._recorded) >= self.settings.max_records_per_minute:
                break
            entries.append(AuditEntry(
                action=AuditAction.AUTH_FAIL, operator_id="unknown",
                source_address=key[:256], outcome=AuditOutcome.DENIED,
                reason="invalid or disabled operator token",
                details={"failures": source.unrecorded, "consecutive": source.failures,
                         "locked_seconds": round(max(0.0, source.locked_until - now), 1)}))
            source.unrecorded = 0
            source.last_recorded = now
            self._recorded.append(now)
        return entries

    def _forget_oldest(self) -> None:
        oldest = sorted(self._sources, key=lambda k: self._sources[k].last_seen)
        for key in oldest[: len(oldest) // 10 or 1]:
            del self._sources[key]
