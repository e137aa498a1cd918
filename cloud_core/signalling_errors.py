"""What an agent's refusal means to the core's clients: one table, code → gRPC and HTTP status.

An agent refuses a signal request with a ``safetynet.v1.SignalError`` code (mqtt.proto); the core
raises it as ``SessionRejected(code, message)``. The servicer (gRPC) and the console (HTTP) both
read ``refusal_for(code)`` here, so a code means the same thing on either side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import grpc

from protos.safetynet.v1 import mqtt_pb2

SignalErrorCode = mqtt_pb2.SignalError


@dataclass(frozen=True)
class Refusal:
    """How one refusal reads to a client: gRPC status, HTTP status and the JSON ``error`` kind."""

    grpc_status: grpc.StatusCode
    http_status: int
    http_error: str


#: Codes the table does not list (UNSPECIFIED, INTERNAL, or a newer agent's) read as this.
AGENT_ERROR = Refusal(grpc.StatusCode.INTERNAL, 502, "agent_error")

REFUSALS: Mapping[SignalErrorCode, Refusal] = MappingProxyType({
    mqtt_pb2.SIGNAL_ERROR_UNKNOWN_CAMERA: Refusal(grpc.StatusCode.NOT_FOUND, 404, "camera_unknown"),
    mqtt_pb2.SIGNAL_ERROR_CAMERA_OFFLINE: Refusal(grpc.StatusCode.UNAVAILABLE, 503, "camera_offline"),
    mqtt_pb2.SIGNAL_ERROR_BAD_OFFER: Refusal(grpc.StatusCode.INVALID_ARGUMENT, 400, "bad_offer"),
    mqtt_pb2.SIGNAL_ERROR_GRANT_REJECTED: Refusal(grpc.StatusCode.PERMISSION_DENIED, 403,
                                                  "grant_rejected"),
    mqtt_pb2.SIGNAL_ERROR_CAPACITY: Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 503, "agent_busy"),
    mqtt_pb2.SIGNAL_ERROR_UPLINK_FULL: Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 503,
                                               "uplink_full"),
    mqtt_pb2.SIGNAL_ERROR_UNKNOWN_SESSION: Refusal(grpc.StatusCode.NOT_FOUND, 404, "not_found"),
    mqtt_pb2.SIGNAL_ERROR_INTERNAL: AGENT_ERROR,
})


#: An agent's refusal of an evidence request (``safetynet.v1.EvidenceError``), read the same way.
EVIDENCE_REFUSALS: Mapping[mqtt_pb2.EvidenceError, Refusal] = MappingProxyType({
    mqtt_pb2.EVIDENCE_ERROR_UNKNOWN_CAMERA: Refusal(grpc.StatusCode.NOT_FOUND, 404, "camera_unknown"),
    mqtt_pb2.EVIDENCE_ERROR_UNKNOWN_CLIP: Refusal(grpc.StatusCode.NOT_FOUND, 404, "not_found"),
    mqtt_pb2.EVIDENCE_ERROR_TOO_LONG: Refusal(grpc.StatusCode.INVALID_ARGUMENT, 400, "too_long"),
    mqtt_pb2.EVIDENCE_ERROR_BAD_REQUEST: Refusal(grpc.StatusCode.INVALID_ARGUMENT, 400,
                                                 "bad_request"),
    mqtt_pb2.EVIDENCE_ERROR_DISK_BUDGET: Refusal(grpc.StatusCode.RESOURCE_EXHAUSTED, 507,
                                                 "disk_budget"),
    mqtt_pb2.EVIDENCE_ERROR_GRANT_REJECTED: Refusal(grpc.StatusCode.PERMISSION_DENIED, 403,
                                                    "grant_rejected"),
    mqtt_pb2.EVIDENCE_ERROR_NOT_SEALED: Refusal(grpc.StatusCode.FAILED_PRECONDITION, 409,
                                                "not_sealed"),
    mqtt_pb2.EVIDENCE_ERROR_DISABLED: Refusal(grpc.StatusCode.FAILED_PRECONDITION, 409,
                                              "evidence_disabled"),
    mqtt_pb2.EVIDENCE_ERROR_INTERNAL: AGENT_ERROR,
})


def evidence_refusal_for(code: mqtt_pb2.EvidenceError) -> Refusal:
    """The gRPC and HTTP reading of an evidence refusal; ``AGENT_ERROR`` when not listed."""
    return EVIDENCE_REFUSALS.get(code, AGENT_ERROR)


def refusal_for(code: SignalErrorCode) -> Refusal:
    """The gRPC and HTTP reading of ``code``; ``AGENT_ERROR`` for a code not in the table."""
    return REFUSALS.get(code, AGENT_ERROR)


def code_name(code: SignalErrorCode) -> str:
    """``code``'s short name for logs and messages ("GRANT_REJECTED"), or its number if unknown."""
    try:
        return mqtt_pb2.SignalError.Name(code).removeprefix("SIGNAL_ERROR_")
    except ValueError:
        return str(int(code))
