"""A carrier's wearable platform: children and dementia patients walking in the pilot districts,
a few SOS presses and safe-zone exits an hour, their positions while an alert is open, posted to
a running core's feed endpoint (``POST /api/feeds/wearables``) with a feed client's token.

Subjects are pseudonymous ids (``W-3f9a1c``); the simulator, like the carrier, sends no names.
Each subject starts near a pilot camera place and walks (children ~1.3 m/s, dementia patients
~0.8 m/s) with a wandering heading. SOS and exits arrive as Poisson processes at the configured
hourly rates; every event carries an ``event_id`` so a retry after a lost answer is idempotent.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Self

import aiohttp
import structlog

from simulators.pilot_districts import PILOT_DISTRICTS

log = structlog.get_logger(__name__)

EARTH_M: Final = 6_371_008.8
SPEEDS: Final = {"child": (1.0, 1.6), "dementia": (0.5, 1.0)}


@dataclass(frozen=True)
class WearableSimConfig:
    core_url: str                       # the core's console, e.g. http://127.0.0.1:8080
    token: str                          # a feed client's token (role "feed")
    subjects: int = 20
    sos_per_hour: float = 3.0
    exits_per_hour: float = 2.0
    position_seconds: float = 10.0      # how often an alerting subject's position is sent
    sos_at_start: int = 0               # SOS presses right away (demos, tests, benchmarks)
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.subjects <= 10_000:
            raise ValueError(f"subjects must be 1..10000, got {self.subjects}")
        if self.sos_per_hour < 0 or self.exits_per_hour < 0:
            raise ValueError("event rates must not be negative")
        if not 0.1 <= self.position_seconds <= 3600:
            raise ValueError(f"position_seconds must be 0.1..3600, got {self.position_seconds}")
        if not 0 <= self.sos_at_start <= self.subjects:
            raise ValueError("sos_at_start must be between 0 and the number of subjects")


@dataclass
class Subject:
    subject_id: str
    kind: str                # "child" | "dementia"
    lat: float
    lon: float
    heading: float           # radians, 0 = north
    speed_mps: float
    incident_id: str = ""    # the open alert, if any

    def walk(self, seconds: float, rng: random.Random) -> None:
        self.heading += rng.gauss(0.0, 0.5)
        metres = self.speed_mps * seconds
        self.lat += math.degrees(metres * math.cos(self.heading) / EARTH_M)
        self.lon += math.degrees(metres * math.sin(self.heading) / EARTH_M
                                 / math.cos(math.radians(self.lat)))


@dataclass
class SimStats:
    sent: int = 0
    alerts: int = 0
    moves: int = 0
    refused: int = 0
    retries: int = 0
    alerts_opened: list[str] = field(default_factory=list)


class WearableSimulator:
    """``async with WearableSimulator(config) as sim: await sim.run(seconds)``."""

    def __init__(self, config: WearableSimConfig) -> None:
        self.config = config
        self.stats = SimStats()
        self._rng = random.Random(config.seed)
        places = [c for d in PILOT_DISTRICTS for c in d.cameras]
        self.subjects = []
        for _ in range(config.subjects):
            home = self._rng.choice(places)
            kind = self._rng.choice(("child", "dementia"))
            self.subjects.append(Subject(
                f"W-{self._rng.getrandbits(24):06x}", kind,
                home.lat + self._rng.uniform(-0.0008, 0.0008),
                home.lon + self._rng.uniform(-0.0008, 0.0008),
                self._rng.uniform(0, 2 * math.pi), self._rng.uniform(*SPEEDS[kind])))
        self._session: aiohttp.ClientSession | None = None
        self._events = 0

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            base_url=self.config.core_url,
            headers={"Authorization": f"Bearer {self.config.token}"},
            timeout=aiohttp.ClientTimeout(total=10))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self, seconds: float = 0.0) -> SimStats:
        """Play events for ``seconds`` (0: until cancelled); return what was sent."""
        for subject in self.subjects[:self.config.sos_at_start]:
            await self.alert(subject, "sos")
        deadline = time.monotonic() + seconds if seconds else math.inf
        tick = self.config.position_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(min(tick, max(0.0, deadline - time.monotonic())))
            await self.step(tick)
        return self.stats

    async def step(self, seconds: float) -> None:
        """Everyone walks ``seconds``; alerts fire at their rates; alerting subjects report."""
        for subject in self.subjects:
            subject.walk(seconds, self._rng)
        rates = (("sos", self.config.sos_per_hour), ("geofence-exit", self.config.exits_per_hour))
        for kind, per_hour in rates:
            for _ in range(self._poisson(per_hour * seconds / 3600)):
                calm = [s for s in self.subjects if not s.incident_id]
                if calm:
                    await self.alert(self._rng.choice(calm), kind)
        for subject in [s for s in self.subjects if s.incident_id]:
            await self.position(subject)

    async def alert(self, subject: Subject, kind: str) -> dict[str, Any]:
        """An SOS press or a safe-zone exit for ``subject``; the core's answer."""
        answer = await self._post({"event": kind, "subject_id": subject.subject_id,
                                   "subject_kind": subject.kind, **self._where(subject)})
        if "incident_id" in answer:
            subject.incident_id = str(answer["incident_id"])
            self.stats.alerts += 1
            self.stats.alerts_opened.append(subject.incident_id)
            log.info("wearable alert sent", kind=kind, subject=subject.subject_id,
                     incident=subject.incident_id)
        return answer

    async def position(self, subject: Subject) -> dict[str, Any]:
        answer = await self._post({"event": "position", "subject_id": subject.subject_id,
                                   **self._where(subject)})
        if "incident_id" in answer:
            self.stats.moves += 1
        else:
            subject.incident_id = ""      # the alert was closed: stop sending positions
        return answer

    def _where(self, subject: Subject) -> dict[str, Any]:
        self._events += 1
        return {"lat": round(subject.lat, 6), "lon": round(subject.lon, 6),
                "at": datetime.now(UTC).isoformat(),
                "event_id": f"{subject.subject_id}-{self._events}"}

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST with capped, jittered retries (the event_id makes a retry idempotent)."""
        assert self._session is not None, "use 'async with WearableSimulator(...)'"
        delay = 0.2
        for attempt in range(4):
            try:
                async with self._session.post("/api/feeds/wearables", json=body) as response:
                    answer: dict[str, Any] = await response.json()
                    self.stats.sent += 1
                    if response.status >= 400:
                        self.stats.refused += 1
                        log.info("wearable event refused", status=response.status,
                                 message=answer.get("message"))
                        return {}
                    return answer
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt == 3:
                    raise
                self.stats.retries += 1
                log.warning("wearable event retried", error=str(exc))
                await asyncio.sleep(delay * (0.5 + self._rng.random()))
                delay = min(delay * 2, 2.0)
        return {}

    def _poisson(self, mean: float) -> int:
        count, threshold, product = 0, math.exp(-mean), self._rng.random()
        while product > threshold:
            count += 1
            product *= self._rng.random()
        return count
