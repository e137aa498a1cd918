"""District provisioning: the city's certificate authority, district enrolment (certificate,
camera inventory, one agent bundle), the Mosquitto TLS config and ACL, and revocation.
The command lines over it (``safetynet provision …``, ``safetynet agent install|check``) are in
the top layer: ``safetynet/commands/provision.py`` and ``safetynet/commands/agent.py``."""
