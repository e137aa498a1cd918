"""The MQTT topic contract, version 1: for each kind of message, its topic, QoS and retain flag.

Every topic a district's agent touches lies under ``safetynet/v1/districts/<district>/``, so a
broker ACL can confine an agent to its own district with one pattern. Payloads are the protobuf
messages of ``protos/safetynet/v1/mqtt.proto``; docs/mqtt.md describes each topic.

``route(kind, district)`` is what every publisher and subscriber uses: a ``Route`` carries the
topic with the QoS and retain flag of that kind of message (``ROUTES``), so no call site picks
them. The per-kind functions (``agent_status()``, ...) give the topic name alone, for ACLs and
tests.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

PREFIX = "safetynet/v1/districts"

# District and camera ids appear in topic names: keep them to a safe alphabet.
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")

#: Stands for every district (or camera) in a subscription.
ANY = "+"


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is usable as a district or camera id, else raise ValueError."""
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid id: use 1-63 lowercase letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return value


class Kind(enum.StrEnum):
    """Each kind of message on the v1 topics (its value names it in logs)."""

    AGENT_STATUS = "agent_status"        # agent -> core
    CAMERA_STATUS = "camera_status"      # agent -> core (older agents: one message a change)
    CAMERA_CHANGES = "camera_changes"    # agent -> core: a window's camera changes in one
    HEARTBEAT = "heartbeat"              # agent -> core
    SIGNAL_REQUEST = "signal_request"    # core -> agent
    SIGNAL_RESPONSE = "signal_response"  # agent -> core
    SESSION_EVENTS = "session_events"    # agent -> core
    AUDIT_CHECKPOINT = "audit_checkpoint"  # core -> agent (the agent is a witness)
    EVIDENCE_EVENTS = "evidence_events"  # agent -> core: a clip sealed or purged
    CORE_STATUS = "core_status"          # core -> every agent: is the core up (local mode)
    RELAY_STATUS = "relay_status"        # cloud relay -> core: signed registration, last will


@dataclass(frozen=True)
class Delivery:
    """How the broker carries one kind of message."""

    qos: int
    retain: bool


#: The one place QoS and retain are chosen (docs/mqtt.md says why).
#: Statuses are retained so a (re)starting core sees every district's state at once; signalling
#: is QoS 0 because each request has its own timeout at the core and clean sessions would make
#: QoS 1 an acknowledgement per message, not delivery across a reconnect.
DELIVERY: dict[Kind, Delivery] = {
    Kind.AGENT_STATUS: Delivery(qos=1, retain=True),
    Kind.CAMERA_STATUS: Delivery(qos=1, retain=False),  # a change; the snapshot is retained
    Kind.CAMERA_CHANGES: Delivery(qos=1, retain=False),
    Kind.HEARTBEAT: Delivery(qos=1, retain=True),
    Kind.SIGNAL_REQUEST: Delivery(qos=0, retain=False),
    Kind.SIGNAL_RESPONSE: Delivery(qos=0, retain=False),
    Kind.SESSION_EVENTS: Delivery(qos=1, retain=False),
    Kind.AUDIT_CHECKPOINT: Delivery(qos=1, retain=True),
    Kind.EVIDENCE_EVENTS: Delivery(qos=1, retain=False),
    Kind.CORE_STATUS: Delivery(qos=1, retain=True),
    Kind.RELAY_STATUS: Delivery(qos=1, retain=True),
}

_PATHS: dict[Kind, str] = {
    Kind.AGENT_STATUS: "agent/status",
    Kind.CAMERA_STATUS: "cameras/{camera}/status",
    Kind.CAMERA_CHANGES: "camera_changes",
    Kind.HEARTBEAT: "heartbeat",
    Kind.SIGNAL_REQUEST: "signal/request",
    Kind.SIGNAL_RESPONSE: "signal/response",
    Kind.SESSION_EVENTS: "sessions/events",
    Kind.AUDIT_CHECKPOINT: "audit/checkpoint",
    Kind.EVIDENCE_EVENTS: "evidence/events",
}


@dataclass(frozen=True)
class Route:
    """Where one kind of message goes and how: topic, QoS and retain flag."""

    kind: Kind
    topic: str
    qos: int
    retain: bool


#: Each core replica's own status, outside every district's subtree: one topic per replica
#: (``…/core/status/<replica>``), so that one replica's last will never says the whole core is
#: gone while another serves. Agents subscribe to every replica's (``ANY``).
CORE_STATUS_PREFIX = "safetynet/v1/core/status"
CORE_STATUS_TOPICS = f"{CORE_STATUS_PREFIX}/{ANY}"


def core_status_route(replica: str = ANY) -> Route:
    """The route of replica ``replica``'s retained status (``CoreStatus``; its last will says
    offline); ``ANY``: every replica's, to subscribe."""
    if replica != ANY:
        check_id(replica, "core replica")
    delivery = DELIVERY[Kind.CORE_STATUS]
    return Route(Kind.CORE_STATUS, f"{CORE_STATUS_PREFIX}/{replica}", delivery.qos,
                 delivery.retain)


def core_replica_of(topic: str) -> str | None:
    """The replica whose status ``topic`` carries, or None if it is no core status topic."""
    prefix, _, replica = topic.rpartition("/")
    if prefix != CORE_STATUS_PREFIX or not ID_PATTERN.fullmatch(replica):
        return None
    return replica


def route(kind: Kind, district: str, camera: str | None = None) -> Route:
    """The route of ``kind`` for ``district`` (``ANY`` to subscribe to every district).

    ``camera`` is required for ``CAMERA_STATUS`` (``ANY`` for every camera) and refused otherwise.
    ``CORE_STATUS`` belongs to no district: use :func:`core_status_route`.
    """
    if kind is Kind.CORE_STATUS:
        raise ValueError("the core's status belongs to no district: use core_status_route()")
    if kind is Kind.RELAY_STATUS:
        raise ValueError("a relay's status belongs to no district: use relay_route()")
    if (camera is None) == (kind is Kind.CAMERA_STATUS):
        raise ValueError(f"{kind} topics {'need' if camera is None else 'take no'} camera id")
    path = _PATHS[kind].format(camera=camera)
    delivery = DELIVERY[kind]
    return Route(kind, f"{PREFIX}/{district}/{path}", delivery.qos, delivery.retain)


def agent_status(district: str) -> str:
    return route(Kind.AGENT_STATUS, district).topic


def camera_status(district: str, camera: str) -> str:
    return route(Kind.CAMERA_STATUS, district, camera).topic


def camera_changes(district: str) -> str:
    return route(Kind.CAMERA_CHANGES, district).topic


def heartbeat(district: str) -> str:
    return route(Kind.HEARTBEAT, district).topic


def signal_request(district: str) -> str:
    return route(Kind.SIGNAL_REQUEST, district).topic


def signal_response(district: str) -> str:
    return route(Kind.SIGNAL_RESPONSE, district).topic


def session_events(district: str) -> str:
    return route(Kind.SESSION_EVENTS, district).topic


def audit_checkpoint(district: str) -> str:
    return route(Kind.AUDIT_CHECKPOINT, district).topic


def evidence_events(district: str) -> str:
    return route(Kind.EVIDENCE_EVENTS, district).topic


#: Subscriptions of the core: every district's agent -> core messages at once.
#: Heartbeats before camera statuses: a core that (re)subscribes gets each district's retained
#: snapshot first, so its registry is whole after 25 messages, not after 68,000.
CORE_ROUTES = (
    route(Kind.AGENT_STATUS, ANY),
    route(Kind.HEARTBEAT, ANY),
    route(Kind.CAMERA_CHANGES, ANY),
    route(Kind.CAMERA_STATUS, ANY, ANY),
    route(Kind.SIGNAL_RESPONSE, ANY),
    route(Kind.SESSION_EVENTS, ANY),
    route(Kind.EVIDENCE_EVENTS, ANY),
)
CORE_SUBSCRIPTIONS = tuple(r.topic for r in CORE_ROUTES)


#: Cloud relays (docs/cloud-relay.md) live outside every district's subtree, one subtree each, so
#: a broker ACL confines a relay to ``safetynet/v1/relays/<its id>/#`` as it does an agent.
RELAY_PREFIX = "safetynet/v1/relays"

_RELAY_PATHS: dict[Kind, str] = {
    Kind.RELAY_STATUS: "status",
    Kind.SIGNAL_REQUEST: "signal/request",
    Kind.SIGNAL_RESPONSE: "signal/response",
    Kind.SESSION_EVENTS: "sessions/events",
}


def relay_route(kind: Kind, relay: str) -> Route:
    """The route of ``kind`` for the relay ``relay`` (``ANY`` to subscribe to every relay)."""
    path = _RELAY_PATHS.get(kind)
    if path is None:
        raise ValueError(f"{kind} is not a relay topic")
    delivery = DELIVERY[kind]
    return Route(kind, f"{RELAY_PREFIX}/{relay}/{path}", delivery.qos, delivery.retain)


def parse_relay(topic: str) -> tuple[Kind, str] | None:
    """(kind, relay id) of a relay topic; None when ``topic`` is not under ``RELAY_PREFIX``."""
    prefix = RELAY_PREFIX + "/"
    if not topic.startswith(prefix):
        return None
    relay, _, path = topic[len(prefix):].partition("/")
    for kind, relay_path in _RELAY_PATHS.items():
        if path == relay_path and relay:
            return kind, relay
    raise ValueError(f"unknown safetynet/v1 relay topic: {topic!r}")


#: The core's subscriptions to every relay's relay -> core messages.
CORE_RELAY_ROUTES = (
    relay_route(Kind.RELAY_STATUS, ANY),
    relay_route(Kind.SIGNAL_RESPONSE, ANY),
    relay_route(Kind.SESSION_EVENTS, ANY),
)


@dataclass(frozen=True)
class ParsedTopic:
    """What a topic under ``PREFIX`` names: its kind, district and (for camera topics) camera."""

    kind: Kind
    district: str
    camera: str | None = None


def parse(topic: str) -> ParsedTopic:
    """Parse a v1 topic; raise ValueError naming the topic when it is not one of ours."""
    parts = topic.split("/")
    if len(parts) < 5 or "/".join(parts[:3]) != PREFIX:
        raise ValueError(f"not a safetynet/v1 district topic: {topic!r}")
    district, rest = parts[3], parts[4:]
    match rest:
        case ["agent", "status"]:
            return ParsedTopic(Kind.AGENT_STATUS, district)
        case ["cameras", camera, "status"]:
            return ParsedTopic(Kind.CAMERA_STATUS, district, camera)
        case ["heartbeat"]:
            return ParsedTopic(Kind.HEARTBEAT, district)
        case ["camera_changes"]:
            return ParsedTopic(Kind.CAMERA_CHANGES, district)
        case ["signal", "request"]:
            return ParsedTopic(Kind.SIGNAL_REQUEST, district)
        case ["signal", "response"]:
            return ParsedTopic(Kind.SIGNAL_RESPONSE, district)
        case ["sessions", "events"]:
            return ParsedTopic(Kind.SESSION_EVENTS, district)
        case ["audit", "checkpoint"]:
            return ParsedTopic(Kind.AUDIT_CHECKPOINT, district)
        case ["evidence", "events"]:
            return ParsedTopic(Kind.EVIDENCE_EVENTS, district)
    raise ValueError(f"unknown safetynet/v1 topic: {topic!r}")
