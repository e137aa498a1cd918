"""Errors of the edge agent.

    AgentError
    ├── ConfigError              the agent's TOML config is invalid (path, problem)
    ├── SourceError              a camera source failed (camera_id, reason, detail)
    ├── OfferRejected            an SDP offer could not be answered (code, message)
    ├── GrantRejected            a session grant failed the edge check (reason)
    └── EvidenceRefused          an evidence clip request was refused (code, message)
"""

from __future__ import annotations

from protos.safetynet.v1 import mqtt_pb2


class AgentError(Exception):
    """Base of every error the edge agent raises on purpose."""


class ConfigError(AgentError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class SourceError(AgentError):
    """A camera source could not be opened or stopped delivering.

    ``reason`` is one of: refused, unauthorized, timeout, stalled, codec.
    """

    def __init__(self, camera_id: str, reason: str, detail: str) -> None:
        super().__init__(f"camera {camera_id!r} {reason}: {detail}")
        self.camera_id = camera_id
        self.reason = reason
        self.detail = detail


class OfferRejected(AgentError):
    """``code`` is the ``SignalError`` the core receives, e.g. ``SIGNAL_ERROR_BAD_OFFER``."""

    def __init__(self, code: mqtt_pb2.SignalError, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class GrantRejected(AgentError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"grant rejected: {reason}")
        self.reason = reason


class EvidenceRefused(AgentError):
    """An evidence request was refused; ``code`` is an EvidenceError name without prefix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
