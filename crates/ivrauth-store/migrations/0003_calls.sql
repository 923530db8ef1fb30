-- Call sessions. Append-only like 0001 and 0002: never edit this file once released; add
-- 0004_... instead. Times are INTEGER Unix milliseconds. Nothing secret is stored in plain
-- text: `state` is the engine state sealed (AEAD) by the server, `last_answer` the
-- platform-neutral answer JSON, which never holds a secret.
--
-- One row per call in progress, kept small (the target is at most 4 KiB per idle call): no
-- column is derived from another. call_id is platform-qualified (`twilio:CA…`, `api:<id>`);
-- turn is the next turn expected, and the store refuses to move it backwards.
-- pending_secret_account: the account number a hang-up would be charged a failure against.
-- ani: the caller's number, for the per-caller-number limits when a hang-up is charged.
CREATE TABLE call_sessions (
    call_id                TEXT    NOT NULL PRIMARY KEY,
    flow_id                TEXT    NOT NULL,
    flow_version           INTEGER NOT NULL,
    turn                   INTEGER NOT NULL CHECK (turn >= 0),
    state                  BLOB    NOT NULL,
    last_answer            TEXT,
    failures               INTEGER NOT NULL CHECK (failures >= 0),
    pending_secret_account TEXT,
    ani                    TEXT    NOT NULL,
    -- 1 once the call hung up: a tombstone until it expires, so that an old continuation
    -- cannot start the call's attempts over and a late turn cannot bring the row back.
    ended                  INTEGER NOT NULL DEFAULT 0 CHECK (ended IN (0, 1)),
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    expires_at             INTEGER NOT NULL
) STRICT;

-- The expiry sweep takes the oldest expired sessions first.
CREATE INDEX call_sessions_expires_at ON call_sessions (expires_at);
