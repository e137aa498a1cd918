"""Signalling between the core and the agents: the seam, its MQTT transport and its fake.

``base.SignallingTransport`` is the interface the session broker uses: send one
``SignalRequest`` to a district's agent and wait, with a timeout, for its ``SignalResponse``.
``mqtt.MqttSignalling`` is the real one (the district's request and response topics);
``memory.InMemorySignalling`` carries the same messages in-process to an agent-side responder
(``memory.FakeAgent``, or any callable that answers a request), for tests without a broker.
"""

from __future__ import annotations

from cloud_core.signalling.base import Responder, SignallingTransport
from cloud_core.signalling.memory import FakeAgent, InMemorySignalling
from cloud_core.signalling.mqtt import MqttSignalling

__all__ = ["FakeAgent", "InMemorySignalling", "MqttSignalling", "Responder", "SignallingTransport"]
