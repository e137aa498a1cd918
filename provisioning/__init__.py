"""District provisioning: the city's certificate authority, district enrolment (certificate,
camera inventory, one agent bundle), the Mosquitto TLS config and ACL, and revocation.
``safetynet provision …`` and ``safetynet agent install`` are in ``provisioning/cli.py``."""
