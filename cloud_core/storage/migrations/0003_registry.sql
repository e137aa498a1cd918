-- The registry (cloud_core/registry.py) and the incidents that asked for a cloud relay
-- (cloud_core/relays.py): the tables of their SQLite schemas, with the same columns, so
-- tests/cloud_core/test_registry_schema.py finds no difference. Times are ISO text, as on SQLite.
-- No R*Tree here: "cameras near a point" takes its bounding box from cameras_position.

CREATE TABLE districts (
    district_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    agent_id TEXT NOT NULL DEFAULT '',
    agent_online BIGINT NOT NULL DEFAULT 0,
    software_version TEXT NOT NULL DEFAULT '',
    last_seen TEXT
);

CREATE TABLE cameras (
    rowid BIGSERIAL PRIMARY KEY,
    camera_id TEXT NOT NULL UNIQUE,
    district_id TEXT NOT NULL,
    name TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'online',
    reason TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    viewers BIGINT NOT NULL DEFAULT 0,
    last_seen TEXT,
    version BIGINT NOT NULL DEFAULT 0,
    changed_at_us BIGINT  -- the agent's changed_at, microseconds since 1970: a status older loses
);
CREATE INDEX cameras_district ON cameras (district_id);
CREATE INDEX cameras_version ON cameras (version);
CREATE INDEX cameras_position ON cameras (lat, lon);

-- camera_version: the newest batch's; a batch takes the next one with SELECT ... FOR UPDATE
-- of this row, so replicas writing at once number their batches in commit order.
CREATE TABLE registry_meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO registry_meta (key, value) VALUES ('camera_version', 0);

CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    camera_id TEXT NOT NULL,
    district_id TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    closed_at TEXT,
    close_reason TEXT,
    bytes_sent BIGINT,
    duration_seconds DOUBLE PRECISION,
    operator_id TEXT NOT NULL DEFAULT '',
    agency TEXT NOT NULL DEFAULT '',
    incident_id TEXT NOT NULL DEFAULT '',
    breakglass_id TEXT NOT NULL DEFAULT '',
    basis TEXT NOT NULL DEFAULT '',
    relay_id TEXT NOT NULL DEFAULT '',
    reported_at TEXT
);
CREATE INDEX sessions_open ON sessions (closed_at);

CREATE TABLE incident_relays (
    incident_id TEXT PRIMARY KEY,
    asked_by TEXT NOT NULL,
    asked_at TEXT NOT NULL
);
