"""Errors of the edge agent.

    AgentError
    ├── ConfigError              the agent's TOML config is invalid (path, problem)
    ├── SourceError              a camera source failed (camera_id, reason, detail)
    ├── OfferRejected            an SDP offer could not be answered (code, message)
    ├── GrantRejected            a session grant failed the edge check (reason)
    ├── EvidenceRefused          an evidence clip request was refused (code, message)
    ├── LocalAccessRefused       a local-mode sign-in or view was refused (status, kind, message)
    └── JournalError             the local journal cannot be opened or written (path, detail)
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
    """An evidence request was refused; ``code`` is the ``EvidenceError`` the core receives (the
    proto enum both sides share; the core reads it in ``signalling_errors.EVIDENCE_REFUSALS``)."""

    def __init__(self, code: mqtt_pb2.EvidenceError, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LocalAccessRefused(AgentError):
    """Local mode (docs/local-mode.md) refused a sign-in or a view.

    ``status`` is the HTTP status the local console answers with, ``kind`` its JSON error kind.
    """

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


class JournalError(AgentError):
    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"local journal {path}: {detail}")
        self.path = path
        self.detail = detail
