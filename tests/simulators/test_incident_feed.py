"""``safetynet sim incidents``' feed against a real core: retries return the same incident,
112 cases move and every case is closed."""

from __future__ import annotations

from cloud_core.server import CoreServer
from simulators.incident_feed import IncidentFeed, IncidentFeedConfig


async def test_the_cad_feed_plays_cases_retries_moves_and_closes(core: CoreServer) -> None:
    assert core.access is not None
    _, token = core.access.operators.add("cad-112", agency="police-112", role="feed",
                                         policy=core.access.policy)
    feed = IncidentFeed(IncidentFeedConfig(core=core.address, token=token, per_minute=6000,
                                           retry_share=1.0, moves=2, seed=3))
    stats = await feed.run(5)
    assert (stats.reports, stats.retries_same_incident, stats.retries_new_incident) == (5, 5, 0)
    assert (stats.moves, stats.closed, stats.refused) == (10, 5, 0)
    assert core.access.list_incidents(core.access.authenticate(token)) == []
