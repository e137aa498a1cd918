"""The standby link's rules, on their own: which link a signalling message goes out on, a copy
that came on both links acted on once, and where the standby connects.

The two links here are stand-ins with a ``send`` and an uptime (a unit test of one module); the
links against a real NATS cluster, a node killed, are tests/integration/test_core_failover.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from protos import topics
from runtime.exceptions import LinkDown
from runtime.mqtt_link import BrokerAddress, BrokerSettings, MqttLink
from runtime.standby_link import SETTLE_S, SeenRequests, SignalPair

ROUTE = topics.route(topics.Kind.SIGNAL_REQUEST, "gangnam")


class StandIn(MqttLink):
    """A link that is up (for ``up`` seconds) or down, and keeps what it was asked to send."""

    def __init__(self, up: float | None) -> None:
        super().__init__(BrokerSettings(), client_id="stand-in", on_message=_ignore)
        self.up = up
        self.sent: list[bytes] = []

    def up_for(self) -> float:
        return self.up or 0.0

    async def send(self, route: topics.Route, payload: bytes) -> None:
        if self.up is None:
            raise LinkDown(route.topic, "down")
        self.sent.append(payload)


async def _ignore(message: object) -> None:
    return None


async def test_a_settled_main_link_carries_signalling_alone() -> None:
    main, standby = StandIn(up=SETTLE_S + 1), StandIn(up=600)
    await SignalPair(main, standby).send(ROUTE, b"offer")
    assert (main.sent, standby.sent) == ([b"offer"], [])


async def test_a_fresh_main_link_shares_each_message_with_the_standby() -> None:
    # A node that just took the connection may pass nothing on until the cluster has elected.
    main, standby = StandIn(up=0.5), StandIn(up=600)
    await SignalPair(main, standby).send(ROUTE, b"offer")
    assert (main.sent, standby.sent) == ([b"offer"], [b"offer"])


async def test_the_standby_carries_it_while_the_main_link_is_down() -> None:
    main, standby = StandIn(up=None), StandIn(up=600)
    await SignalPair(main, standby).send(ROUTE, b"answer")
    assert standby.sent == [b"answer"]


async def test_both_links_down_is_the_main_links_error() -> None:
    with pytest.raises(LinkDown, match="down"):
        await SignalPair(StandIn(up=None), StandIn(up=None)).send(ROUTE, b"answer")
    with pytest.raises(LinkDown):
        await SignalPair(StandIn(up=None)).send(ROUTE, b"answer")  # one broker: no standby


def test_a_request_is_acted_on_once_of_its_two_copies() -> None:
    seen = SeenRequests(kept=2)
    assert seen.first("r1") and not seen.first("r1")
    assert seen.first("r2") and seen.first("r3")  # r1 is forgotten past the kept count
    assert seen.first("r1") and not seen.first("r3")


def test_the_standby_starts_on_the_next_node_and_needs_a_cluster(tmp_path: Path) -> None:
    nodes = {"hosts": ["n1:8883", "n2:8883", "n3:8883"]}
    settings = BrokerSettings.from_mapping(nodes, tmp_path)
    standby = settings.standby_settings()
    assert standby is not None
    assert standby.hosts == (BrokerAddress("n2", 8883), BrokerAddress("n3", 8883),
                             BrokerAddress("n1", 8883))
    assert BrokerSettings.from_mapping({"host": "mqtt.city"}, tmp_path).standby_settings() is None
    off = BrokerSettings.from_mapping({**nodes, "standby": False}, tmp_path)
    assert off.standby_settings() is None
    with pytest.raises(ValueError, match="standby must be true or false"):
        BrokerSettings.from_mapping({**nodes, "standby": "yes"}, tmp_path)
