"""Errors of the cloud core.

    CoreError
    ├── RegistryError            the registry's storage failed
    ├── CameraNotFound           no such camera (camera_id)
    ├── AgentUnavailable         the camera's agent is offline or did not answer (district_id)
    ├── SessionRejected          the agent refused the offer (code, message)
    ├── SessionNotFound          no such session (session_id)
    ├── ConfigError              a core configuration file is invalid (path, problem)
    ├── PolicyError              the policy file is invalid (path, problem)
    ├── AccessDenied             a decision said no (reason)
    ├── Unauthenticated          no valid operator token (reason)
    ├── SignInThrottled          too many failed sign-ins from a source or for an operator (reason, retry_after, per)
    ├── IncidentNotFound         no such incident, or not visible to the caller (incident_id)
    ├── InvalidRequest           a malformed request (problem)
    ├── GrantError               a grant could not be signed or loaded
    ├── AuditError               the audit log could not be written or read
    │   └── AuditChainBroken     verification failed (seq, problem)
    └── StorageError             a database could not be used (database: no password)
        ├── DatabaseUnavailable  cannot connect: wrong password, unreachable, bad DSN (reason)
        └── SchemaTooNew         the database's schema is newer than this core (found, known)

Servicers translate these into gRPC status codes; nothing else does.
"""

from __future__ import annotations

from protos.safetynet.v1 import mqtt_pb2


class CoreError(Exception):
    """Base of every error the cloud core raises on purpose."""


class RegistryError(CoreError):
    pass


class CameraNotFound(CoreError):
    def __init__(self, camera_id: str) -> None:
        super().__init__(f"camera {camera_id!r} is not in the registry")
        self.camera_id = camera_id


class AgentUnavailable(CoreError):
    def __init__(self, district_id: str, why: str) -> None:
        super().__init__(f"the agent of district {district_id!r} is unavailable: {why}")
        self.district_id = district_id
        self.why = why


class SessionRejected(CoreError):
    """``code`` is the agent's ``SignalError``; cloud_core.signalling_errors reads it for clients."""

    def __init__(self, code: mqtt_pb2.SignalError, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SessionNotFound(CoreError):
    def __init__(self, session_id: str) -> None:
        super().__init__(f"session {session_id!r} is not open")
        self.session_id = session_id


class ConfigError(CoreError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class PolicyError(CoreError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class AccessDenied(CoreError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GrantError(CoreError):
    pass


class AuditError(CoreError):
    pass


class AuditChainBroken(AuditError):
    def __init__(self, seq: int, problem: str) -> None:
        super().__init__(f"audit record {seq}: {problem}")
        self.seq = seq
        self.problem = problem


class StorageError(CoreError):
    """``database`` names the database without its password."""

    def __init__(self, database: str, problem: str) -> None:
        super().__init__(f"{database}: {problem}")
        self.database = database
        self.problem = problem


class DatabaseUnavailable(StorageError):
    def __init__(self, database: str, reason: str) -> None:
        super().__init__(database, f"cannot connect: {reason}")
        self.reason = reason


class SchemaTooNew(StorageError):
    def __init__(self, database: str, found: int, known: int) -> None:
        super().__init__(
            database, f"the database's schema is version {found}, newer than this core knows "
            f"({known}): upgrade safetynet on this replica before starting it")
        self.found = found
        self.known = known


class Unauthenticated(CoreError):
    """No valid operator token: gRPC UNAUTHENTICATED, HTTP 401."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignInThrottled(CoreError):
    """Too many failed sign-ins from this source, or naming this operator from any address:
    gRPC RESOURCE_EXHAUSTED, HTTP 429."""

    def __init__(self, retry_after: float, *, per: str = "address") -> None:
        self.retry_after = retry_after
        self.per = per
        whose = "from this address" if per == "address" else "naming this operator"
        self.reason = (f"too many failed sign-ins {whose}; try again in "
                       f"{max(1, round(retry_after))} s")
        super().__init__(self.reason)


class IncidentNotFound(CoreError):
    def __init__(self, incident_id: str) -> None:
        super().__init__(f"incident {incident_id!r} does not exist or is not visible to you")
        self.incident_id = incident_id


class InvalidRequest(CoreError):
    """The caller's request is malformed: gRPC INVALID_ARGUMENT, HTTP 400."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
