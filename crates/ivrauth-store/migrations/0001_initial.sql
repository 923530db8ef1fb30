-- ivrauth initial schema (SQLite). Migrations are append-only: never edit this file once
-- released; add 0002_... instead. Times are INTEGER Unix milliseconds. Nothing secret is
-- stored: client secrets and access tokens arrive already hashed (SHA-256 hex).

-- One row per flow: its identity and pointer to the current version.
CREATE TABLE flows (
    id              TEXT    NOT NULL PRIMARY KEY,
    current_version INTEGER NOT NULL CHECK (current_version >= 1),
    name            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    created_by      TEXT    NOT NULL,
    deleted_at      INTEGER
) STRICT;

-- Every version ever deployed; kept after the flow is deleted (runs may reference them).
-- created_at / created_by: when and by whom this version was written.
CREATE TABLE flow_versions (
    flow_id    TEXT    NOT NULL REFERENCES flows (id),
    version    INTEGER NOT NULL CHECK (version >= 1),
    name       TEXT    NOT NULL,
    document   TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    PRIMARY KEY (flow_id, version)
) STRICT;

-- API clients (OAuth2 client credentials). scopes: space-separated.
CREATE TABLE clients (
    id                   TEXT    NOT NULL PRIMARY KEY,
    name                 TEXT    NOT NULL,
    scopes               TEXT    NOT NULL,
    secret_hash          TEXT    NOT NULL,
    previous_secret_hash TEXT,
    previous_valid_until INTEGER,
    created_at           INTEGER NOT NULL,
    revoked_at           INTEGER
) STRICT;

-- Issued access tokens, keyed by the SHA-256 hex of the token. scopes: space-separated.
CREATE TABLE tokens (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    client_id  TEXT    NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scopes     TEXT    NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX tokens_client_id ON tokens (client_id);
CREATE INDEX tokens_expires_at ON tokens (expires_at);

-- The hash-chained audit log. seq is assigned by the store (1, 2, ...) inside a
-- BEGIN IMMEDIATE transaction; detail is JSON text.
CREATE TABLE audit (
    seq       INTEGER NOT NULL PRIMARY KEY,
    id        TEXT    NOT NULL UNIQUE,
    time      INTEGER NOT NULL,
    event     TEXT    NOT NULL,
    outcome   TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    subject   TEXT    NOT NULL,
    trace_id  TEXT,
    detail    TEXT    NOT NULL,
    prev_hash TEXT    NOT NULL,
    hash      TEXT    NOT NULL
) STRICT;

CREATE INDEX audit_time ON audit (time);
CREATE INDEX audit_subject ON audit (subject);

-- Defence in depth against application bugs: the audit table is append-only. (Someone with
-- write access to the file can drop these; the hash chain is what detects that.)
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'audit log is append-only');
END;

-- Runs of flows (simulations now, calls later). outcome: non-secret JSON summary.
-- No foreign key to flows: inline-document simulations have no flow, and runs are a log.
CREATE TABLE runs (
    id           TEXT    NOT NULL PRIMARY KEY,
    flow_id      TEXT,
    flow_version INTEGER,
    kind         TEXT    NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    outcome      TEXT
) STRICT;

CREATE INDEX runs_flow ON runs (flow_id, flow_version);
CREATE INDEX runs_started_at ON runs (started_at);
