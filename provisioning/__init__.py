"""District provisioning: certificate authority, agent bundles, broker configs (to come)."""
