-- The audit log, as on SQLite: the same columns and text encodings, so a record hashes the same.
-- Appends are serialised by a transaction-level advisory lock (the writer takes it first; the
-- trigger takes it too, so a foreign INSERT cannot fork the chain either). Triggers refuse
-- UPDATE, DELETE and TRUNCATE (INSERT ... ON CONFLICT DO UPDATE is an UPDATE): they stop
-- mistakes, not the database owner; the hash chain and the signed checkpoints show tampering.

CREATE TABLE audit_records (
    seq BIGINT PRIMARY KEY CHECK (seq >= 1),
    at TEXT NOT NULL,
    action TEXT NOT NULL,
    operator_id TEXT NOT NULL,
    agency TEXT,
    source_address TEXT,
    camera_ids TEXT NOT NULL,
    incident_id TEXT,
    purpose TEXT,
    legal_basis TEXT,
    outcome TEXT NOT NULL,
    reason TEXT,
    period_start TEXT,
    period_end TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_records_at ON audit_records (at);
CREATE INDEX audit_records_operator ON audit_records (operator_id, seq);
CREATE INDEX audit_records_incident ON audit_records (incident_id, seq);

CREATE TABLE audit_checkpoints (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq BIGINT NOT NULL,
    head_hash TEXT NOT NULL,
    at TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature TEXT NOT NULL
);

CREATE TABLE audit_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit log is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;

-- 0x5AFE0A0D1700 is the chain's lock: the same key in cloud_core/storage/postgres.py.
CREATE FUNCTION audit_records_extend_head() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_seq BIGINT;
    head_hash TEXT;
BEGIN
    PERFORM pg_advisory_xact_lock(100047136823040);
    SELECT seq, hash INTO head_seq, head_hash FROM audit_records ORDER BY seq DESC LIMIT 1;
    IF NEW.seq IS DISTINCT FROM coalesce(head_seq, 0) + 1
       OR NEW.prev_hash IS DISTINCT FROM coalesce(head_hash, repeat('0', 64)) THEN
        RAISE EXCEPTION 'audit record does not extend the chain head'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER audit_records_extend_head BEFORE INSERT ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_records_extend_head();
CREATE TRIGGER audit_records_no_change BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_change BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_meta_no_change BEFORE UPDATE OR DELETE ON audit_meta
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_meta_no_truncate BEFORE TRUNCATE ON audit_meta
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Only reading and appending for everyone but the owner: grant the core's role these alone.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_records, audit_checkpoints, audit_meta FROM PUBLIC;
