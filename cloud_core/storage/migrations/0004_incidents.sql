-- Incidents and what hangs off them, as on SQLite (cloud_core/incidents.py, incident_trail.py,
-- dispatch.py, wearables.py, golden_time.py, evidence.py): the same columns, times as ISO TEXT
-- so values round-trip identically, JSON as TEXT. tests/cloud_core/test_incident_schema.py keeps
-- the two in step.

CREATE TABLE incidents (
    incident_id TEXT PRIMARY KEY,
    incident_type TEXT NOT NULL,
    service TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    radius_m DOUBLE PRECISION NOT NULL,
    agencies TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    closed_at TEXT,
    close_reason TEXT,
    legal_basis TEXT NOT NULL,
    purpose TEXT NOT NULL,
    occurred_at TEXT,
    external_ref TEXT NOT NULL DEFAULT '',
    reported_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX incidents_open ON incidents (closed_at, expires_at);

CREATE TABLE incident_areas (
    incident_id TEXT PRIMARY KEY,
    geojson TEXT,
    district_ids TEXT NOT NULL
);

CREATE TABLE break_glass (
    breakglass_id TEXT PRIMARY KEY,
    operator_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    camera_ids TEXT NOT NULL,
    district_ids TEXT NOT NULL,
    started_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    stopped_at TEXT
);

CREATE TABLE facilities (
    facility_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);

-- The primary key makes two replicas' positions for one incident take distinct seq numbers:
-- TrailStore locks the incident's row first, and retries on a collision.
CREATE TABLE incident_positions (
    incident_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    lat DOUBLE PRECISION NOT NULL,
    lon DOUBLE PRECISION NOT NULL,
    at TEXT NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (incident_id, seq)
);

CREATE TABLE incident_links (
    incident_id TEXT NOT NULL,
    other_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    at TEXT NOT NULL,
    linked_by TEXT NOT NULL,
    PRIMARY KEY (incident_id, other_id)
);

CREATE TABLE incident_refs (
    agency TEXT NOT NULL,
    external_ref TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    PRIMARY KEY (agency, external_ref)
);

CREATE TABLE dispatch_assignments (
    incident_id TEXT NOT NULL,
    officer_id TEXT NOT NULL,
    assigned_by TEXT NOT NULL,
    at TEXT NOT NULL,
    PRIMARY KEY (incident_id, officer_id)
);

CREATE TABLE dispatch_pushes (
    push_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    bytes BIGINT NOT NULL DEFAULT 0,
    at TEXT NOT NULL,
    pushed_by TEXT NOT NULL,
    jpeg BYTEA
);
CREATE INDEX dispatch_pushes_incident ON dispatch_pushes (incident_id, at);

CREATE TABLE wearable_subjects (
    agency TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    since TEXT NOT NULL,
    PRIMARY KEY (agency, subject_id)
);

CREATE TABLE golden_time (
    session_id TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    service TEXT NOT NULL,
    camera_id TEXT NOT NULL,
    reported_at TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    first_frame_at TEXT NOT NULL,
    client TEXT NOT NULL
);
CREATE INDEX golden_time_at ON golden_time (first_frame_at);

CREATE TABLE evidence_clips (
    clip_id TEXT PRIMARY KEY,
    camera_id TEXT NOT NULL,
    district_id TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    operator_id TEXT NOT NULL,
    agency TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    expires_at TEXT,
    hold_until TEXT,
    manifest_sha256 TEXT,
    agent_key_id TEXT,
    agent_public_key TEXT,
    segments TEXT NOT NULL DEFAULT '[]',
    end_reason TEXT NOT NULL DEFAULT ''
);
