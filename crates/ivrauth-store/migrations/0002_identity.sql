-- The built-in identity directory and lockout state. Append-only like 0001: never edit this
-- file once released; add 0003_... instead. Times are INTEGER Unix milliseconds. No PIN is
-- stored in plain text: pin_hash and pin_history hold argon2id PHC strings only.

-- Accounts of the built-in directory. pin_history: JSON text array of the PHC strings the
-- last PIN changes replaced, newest first (at most 5, trimmed by the store).
CREATE TABLE accounts (
    account        TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL,
    greeting       TEXT,
    phone          TEXT,
    email          TEXT,
    phone_verified INTEGER NOT NULL DEFAULT 0 CHECK (phone_verified IN (0, 1)),
    email_verified INTEGER NOT NULL DEFAULT 0 CHECK (email_verified IN (0, 1)),
    disabled       INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    pin_hash       TEXT,
    pin_history    TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(pin_history)),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

-- Lockout counters, for every identity provider: keyed by the account number as keyed in,
-- whether or not the account exists (so no foreign key), so unknown accounts count alike.
-- No row means no failures since the last success or unlock.
CREATE TABLE lockout_counters (
    account            TEXT    NOT NULL PRIMARY KEY,
    failed_attempts    INTEGER NOT NULL CHECK (failed_attempts >= 0),
    locks              INTEGER NOT NULL CHECK (locks >= 0),
    locked_until       INTEGER,
    locked_permanently INTEGER NOT NULL CHECK (locked_permanently IN (0, 1))
) STRICT;

-- Failed verifications by caller number (ANI; withheld numbers share one key), for the
-- per-caller-number limits. Old rows are purged.
CREATE TABLE ani_failures (
    ani     TEXT    NOT NULL,
    account TEXT    NOT NULL,
    at      INTEGER NOT NULL
) STRICT;

CREATE INDEX ani_failures_ani_at ON ani_failures (ani, at);
CREATE INDEX ani_failures_at ON ani_failures (at);
