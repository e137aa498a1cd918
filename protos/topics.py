"""The MQTT topic contract, version 1.

Every topic a district's agent touches lies under ``safetynet/v1/districts/<district>/``, so a
broker ACL can confine an agent to its own district with one pattern. Payloads are the protobuf
messages of ``protos/safetynet/v1/mqtt.proto``; docs/mqtt.md describes each topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "safetynet/v1/districts"

# District and camera ids appear in topic names: keep them to a safe alphabet.
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_id(value: str, what: str) -> str:
    """Return ``value`` if it is usable as a district or camera id, else raise ValueError."""
    if not ID_PATTERN.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a valid id: use 1-63 lowercase letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return value


def agent_status(district: str) -> str:
    return f"{PREFIX}/{district}/agent/status"


def camera_status(district: str, camera: str) -> str:
    return f"{PREFIX}/{district}/cameras/{camera}/status"


def heartbeat(district: str) -> str:
    return f"{PREFIX}/{district}/heartbeat"


def signal_request(district: str) -> str:
    return f"{PREFIX}/{district}/signal/request"


def signal_response(district: str) -> str:
    return f"{PREFIX}/{district}/signal/response"


def session_events(district: str) -> str:
    return f"{PREFIX}/{district}/sessions/events"


def evidence_events(district: str) -> str:
    return f"{PREFIX}/{district}/evidence/events"


# Subscriptions of the core: every district at once.
CORE_SUBSCRIPTIONS = (
    f"{PREFIX}/+/agent/status",
    f"{PREFIX}/+/cameras/+/status",
    f"{PREFIX}/+/heartbeat",
    f"{PREFIX}/+/signal/response",
    f"{PREFIX}/+/sessions/events",
    f"{PREFIX}/+/evidence/events",
)


@dataclass(frozen=True)
class ParsedTopic:
    """What a topic under ``PREFIX`` names: its kind, district and (for camera topics) camera."""

    kind: str  # agent_status | camera_status | heartbeat | signal_request | signal_response | session_events | evidence_events
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
            return ParsedTopic("agent_status", district)
        case ["cameras", camera, "status"]:
            return ParsedTopic("camera_status", district, camera)
        case ["heartbeat"]:
            return ParsedTopic("heartbeat", district)
        case ["signal", "request"]:
            return ParsedTopic("signal_request", district)
        case ["signal", "response"]:
            return ParsedTopic("signal_response", district)
        case ["sessions", "events"]:
            return ParsedTopic("session_events", district)
        case ["evidence", "events"]:
            return ParsedTopic("evidence_events", district)
    raise ValueError(f"unknown safetynet/v1 topic: {topic!r}")
