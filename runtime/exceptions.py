"""Errors of the shared plumbing.

    SafetyNetError
    ├── LinkDown          the MQTT link is not connected right now (topic)
    ├── BrokerError       a Mosquitto broker could not be started (detail)
    └── KeyFileError      a key file cannot be read, created or trusted (detail)
"""

from __future__ import annotations


class SafetyNetError(Exception):
    """Base of the shared plumbing's errors."""


class LinkDown(SafetyNetError):
    def __init__(self, topic: str, why: str = "not connected to the broker") -> None:
        super().__init__(f"cannot publish to {topic}: {why}")
        self.topic = topic
        self.why = why


class BrokerError(SafetyNetError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class KeyFileError(SafetyNetError):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail
