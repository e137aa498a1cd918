"""Safety Net's shared plumbing and its one command line, ``safetynet``.

The parts live in their own packages (``edge_agent``, ``cloud_core``, ``viewer``, ``simulators``,
``provisioning``); this package holds what they share — the MQTT link, the WebRTC settings, the
Mosquitto runner — and the CLI and demo that put them together.
"""

__version__ = "0.1.0"
