-- Which connection of a district's agent its stored status belongs to (AgentStatus.connected_at,
-- microseconds since the epoch), as on SQLite (cloud_core/registry.py): an agent status of an
-- older connection, such as a last will a cluster node publishes late, is not applied.
ALTER TABLE districts ADD COLUMN connected_at_us BIGINT;
