"""A 112/119/disaster CAD system against a running core: reports at a configurable rate, each
with its case number (``external_ref``), a retry of some reports as a CAD does after a lost
answer (the core must return the same incident), a fleeing suspect's moves for 112 cases, and
closes once a case is done. Talks gRPC (``IncidentService``) with a feed or operator token.
"""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import grpc
import structlog

from protos.safetynet.v1 import core_pb2, core_pb2_grpc
from simulators.pilot_districts import PILOT_DISTRICTS

log = structlog.get_logger(__name__)

MIX: Final = {"112": ("robbery", "assault", "kidnapping", "theft"),
              "119": ("fire", "rescue", "emergency-medical"),
              "disaster": ("flood", "landslide")}


@dataclass(frozen=True)
class IncidentFeedConfig:
    core: str                          # HOST:PORT of the core's gRPC
    token: str
    service: str = "112"               # "112", "119" or "disaster"
    per_minute: float = 6.0
    retry_share: float = 0.2           # share of reports sent twice (a CAD retry)
    moves: int = 3                     # moves per 112 case (a fleeing suspect)
    prefix: str = "CAD"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.service not in MIX:
            raise ValueError(f"service must be one of {', '.join(MIX)}, not {self.service!r}")
        if not 0 < self.per_minute <= 6000:
            raise ValueError(f"per_minute must be in (0, 6000], got {self.per_minute}")
        if not 0 <= self.retry_share <= 1 or not 0 <= self.moves <= 100:
            raise ValueError("retry_share must be 0..1 and moves 0..100")


@dataclass
class FeedStats:
    reports: int = 0
    retries_same_incident: int = 0
    retries_new_incident: int = 0
    moves: int = 0
    closed: int = 0
    refused: int = 0
    incidents: list[str] = field(default_factory=list)


class IncidentFeed:
    """``await IncidentFeed(config).run(cases)`` plays ``cases`` cases and returns the stats."""

    def __init__(self, config: IncidentFeedConfig) -> None:
        self.config = config
        self.stats = FeedStats()
        self._rng = random.Random(config.seed)
        self._places = [c for d in PILOT_DISTRICTS for c in d.cameras]
        self._metadata = (("authorization", f"Bearer {config.token}"),)

    async def run(self, cases: int) -> FeedStats:
        async with grpc.aio.insecure_channel(self.config.core) as channel:
            stub: Any = core_pb2_grpc.IncidentServiceStub(channel)
            for number in range(cases):
                await self._case(stub, number)
                await asyncio.sleep(self._rng.expovariate(self.config.per_minute / 60))
        return self.stats

    async def _case(self, stub: Any, number: int) -> None:
        place = self._rng.choice(self._places)
        ref = f"{self.config.prefix}-{datetime.now(UTC):%Y%m%d}-{number:05d}-{self._rng.getrandbits(16):04x}"
        request = core_pb2.ReportIncidentRequest(
            incident_type=self._rng.choice(MIX[self.config.service]), external_ref=ref,
            location=core_pb2.GeoPoint(lat=place.lat, lon=place.lon))
        request.occurred_at.FromDatetime(datetime.now(UTC))
        try:
            report = await stub.Report(request, metadata=self._metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            self.stats.refused += 1
            log.info("report refused", ref=ref, code=exc.code().name, why=exc.details())
            return
        incident_id = report.incident.incident_id
        self.stats.reports += 1
        self.stats.incidents.append(incident_id)
        if self._rng.random() < self.config.retry_share:
            again = await stub.Report(request, metadata=self._metadata, timeout=10)
            if again.incident.incident_id == incident_id:
                self.stats.retries_same_incident += 1
            else:
                self.stats.retries_new_incident += 1
        if self.config.service == "112":
            await self._flee(stub, incident_id, place.lat, place.lon)
        await stub.Close(core_pb2.CloseIncidentRequest(incident_id=incident_id,
                                                       reason="case closed by the CAD system"),
                         metadata=self._metadata, timeout=10)
        self.stats.closed += 1

    async def _flee(self, stub: Any, incident_id: str, lat: float, lon: float) -> None:
        """Moves of about 20 m each (a suspect on foot between CAD updates)."""
        heading = self._rng.uniform(0, 2 * math.pi)
        for _ in range(self.config.moves):
            lat += 20 * math.cos(heading) / 111_195
            lon += 20 * math.sin(heading) / (111_195 * math.cos(math.radians(lat)))
            move = core_pb2.MoveIncidentRequest(incident_id=incident_id, source="cad",
                                                location=core_pb2.GeoPoint(lat=lat, lon=lon))
            await stub.Move(move, metadata=self._metadata, timeout=10)
            self.stats.moves += 1
