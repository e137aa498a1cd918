"""Topic names of the contract: each core replica has its own status topic."""

from __future__ import annotations

import pytest

from protos import topics


def test_each_replica_has_its_own_status_topic_and_agents_subscribe_to_all() -> None:
    a, b = topics.core_status_route("core-a"), topics.core_status_route("core-b")
    assert a.topic != b.topic and a.retain and a.qos == 1
    assert topics.core_status_route().topic == topics.CORE_STATUS_TOPICS
    assert topics.core_replica_of(a.topic) == "core-a"
    assert topics.core_replica_of(topics.CORE_STATUS_PREFIX) is None
    assert topics.core_replica_of(topics.agent_status("gangnam")) is None
    assert topics.core_replica_of(f"{topics.CORE_STATUS_PREFIX}/Not An Id") is None


@pytest.mark.parametrize("replica", ["", "a/b", "#", "UPPER"])
def test_a_replica_name_that_is_no_id_is_refused(replica: str) -> None:
    with pytest.raises(ValueError, match="core replica"):
        topics.core_status_route(replica)
