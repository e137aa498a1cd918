"""Signalling that outlives one broker node: the main link and a standby on another node.

On a clustered broker (two or more ``[broker] hosts``), a client whose node dies must connect
again, and a NATS cluster refuses new MQTT connections until it has elected new leaders for the
streams the dead node led: 4 to 9 s (docs/scale-out.md). Signalling cannot wait that long, so an
agent and a core replica keep a second connection, the standby, on another node, with no last
will. It subscribes at QoS 0, which flows on an established connection through an election, to
signalling only: an agent's to its signal requests, a core's to the agents' answers and their
statuses (an agent that stops while its main link is down says ``offline`` on its standby,
else no one would). A message goes out on the main link,
and also on the standby while the main link is down or has been up for less than ``SETTLE_S``:
a NATS cluster accepts connections during an election that pass nothing on until it is over
(seen here: for up to 20 s), so a freshly reconnected main link is not trusted alone. A message
may come in on both of the receiver's links, which acts on the first copy and drops the other
by its request id (``SeenRequests``).

A node lost without a word (no TCP reset: a cut cable) leaves a settled main link looking up
until its keepalive runs out; a message sent on it meanwhile is lost and its request times out,
as without a standby.

    MqttLink (main): everything, last will, status ─┐
                                                    ├─ SignalPair.send: main (+ standby)
    MqttLink (standby, next node): signalling only ─┘
"""

from __future__ import annotations

import collections
from typing import Final

from protos.topics import Route
from runtime.exceptions import LinkDown
from runtime.mqtt_link import MqttLink

SETTLE_S: Final = 20.0
"""How long a (re)connected main link shares each message with the standby."""
SEEN_KEPT: Final = 4096
"""Request ids remembered to drop a second copy: far more than can be in flight at once."""


class SignalPair:
    """Sends on the main link, and on the standby while the main one is down or unsettled."""

    def __init__(self, main: MqttLink, standby: MqttLink | None = None) -> None:
        self.main = main
        self.standby = standby

    async def send(self, route: Route, payload: bytes) -> None:
        """Publish on the main link, and on the standby unless the main link is settled
        (LinkDown, the main link's, when neither took it)."""
        if self.standby is None:
            await self.main.send(route, payload)
            return
        failure: LinkDown | None = None
        try:
            await self.main.send(route, payload)
            if self.main.up_for() >= SETTLE_S:
                return
        except LinkDown as exc:
            failure = exc
        try:
            await self.standby.send(route, payload)
        except LinkDown:
            if failure is not None:
                raise failure from None


class SeenRequests:
    """The request ids seen lately, to act on a message that came on both links once."""

    def __init__(self, kept: int = SEEN_KEPT) -> None:
        self._seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._kept = kept

    def first(self, request_id: str) -> bool:
        """True the first time ``request_id`` is seen (of the last ``kept``), False after."""
        if request_id in self._seen:
            return False
        self._seen[request_id] = None
        if len(self._seen) > self._kept:
            self._seen.popitem(last=False)
        return True
