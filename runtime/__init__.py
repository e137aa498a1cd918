"""The shared runtime layer: what more than one of Safety Net's parts needs at run time.

It sits right above the contract (``protos/``) and imports no sibling package; ``edge_agent``,
``cloud_core``, ``viewer``, ``simulators`` and ``provisioning`` build on it and on nothing of
each other, and the ``safetynet`` CLI and demo sit on top (``tests/test_layers.py`` enforces it).

- ``mqtt_link``: one owned MQTT connection with reconnect, the broker settings
- ``webrtc``: ICE host addresses and STUN/TURN servers for aiortc
- ``grant``: the session grant's claims, shared by the core that signs and the agent that checks
- ``signing_keys``: Ed25519 key files (0600, refused when open to others)
- ``camera_inventory``: a district's camera inventory CSV, its format and validation
- ``logs``: ``configure_logging()`` for entry points
- ``exceptions``: this layer's errors
"""

__version__ = "0.1.0"
