-- Counters of account numbers the directory does not know are purged once they lock
-- nothing: `unknown` is set when a verification finds no such account, `updated_at` is the
-- time of the last failure.
ALTER TABLE lockout_counters ADD COLUMN unknown INTEGER NOT NULL DEFAULT 0 CHECK (unknown IN (0, 1));
ALTER TABLE lockout_counters ADD COLUMN updated_at INTEGER;
CREATE INDEX lockout_counters_unknown ON lockout_counters (unknown, updated_at) WHERE unknown = 1;
