-- Accounts (issue 16): numbers and senders unreadable at rest, proof of the number, recovery.
-- Phone hashes are stored peppered
-- (HMAC(pepper, phone_hash), computed by the relay, which also rewrites the rows stored
-- before this migration: store/postgres/at_rest.rs), and a delivered message is remembered by a
-- keyed hash of (sender, client id) instead of the two ids.
ALTER TABLE users RENAME COLUMN phone_hash TO phone_key;
ALTER TABLE auth_nonces RENAME COLUMN phone_hash TO phone_key;

-- One row per delivered message, kept 7 days: millions under load. Keys are random, so a
-- hash index finds one in a page or two however large the table grows (a B-tree's random
-- inserts slowed the relay as it grew); delivered_at only grows, so a BRIN index serves
-- the purge at almost no cost per insert.
CREATE TABLE delivery_records (
    dedup_key     BYTEA NOT NULL,
    server_id     BYTEA NOT NULL,
    delivered_at  BIGINT NOT NULL
);
CREATE INDEX idx_delivery_records_key ON delivery_records USING hash (dedup_key);
CREATE INDEX idx_delivery_records_at ON delivery_records USING brin (delivered_at);

-- Facts about the stored data itself: which pepper wrote it, which rows are converted.
CREATE TABLE relay_meta (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

-- Proof of the number: one row per code sent, found by its verification session
-- (HMAC(pepper, session id), which only the requester knows), holding the phone key and
-- HMAC(pepper, phone key ‖ code). A code is usable until `expires_at` (set to 0 once used
-- or void); the row stays a day so the per-number limits can count it.
CREATE TABLE verifications (
    session_key  TEXT PRIMARY KEY,
    phone_key    TEXT NOT NULL,
    code_hash    BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX idx_verifications_phone ON verifications (phone_key, created_at);
CREATE INDEX idx_verifications_created ON verifications (created_at);

-- Re-registration and its lock: tokens carry the generation they were issued for (a new
-- registration of the number starts a new one), and the registration lock verifier is
-- HMAC(pepper, user id ‖ lock token), with its wrong attempts counted.
ALTER TABLE users ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN lock_verifier BYTEA;
ALTER TABLE users ADD COLUMN lock_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN lock_failed_at BIGINT NOT NULL DEFAULT 0;

-- Each pending message's payload size, written with it: acks give it back to the mailbox
-- quota without reading the payload (`length(payload)` in the ack's DELETE … RETURNING made
-- draining a mailbox about 20% slower).
ALTER TABLE pending_messages ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
UPDATE pending_messages SET size = CAST(length(payload) AS BIGINT);
