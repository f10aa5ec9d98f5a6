-- A bounded de-duplication record (issue 17): instead of one row per delivered message for
-- 7 days (millions under load, and slower as they grew), the relay remembers each sender's
-- last RESEND_WINDOW (1,024) stored messages: at most that many rows per sender and one
-- counter, whatever the message rate (store/send_window.rs). Keys are keyed hashes computed
-- by the relay (src/pepper.rs): a counter's key names no sender, and each row's key is
-- unlinkable to the sender's other rows without the pepper, and never reused. The records
-- of deliveries before this migration name no sender, so they cannot join a window: a
-- resend of one of them is stored again, and the recipient's device drops it (it knows
-- the message id).
DROP TABLE delivery_records;

-- How many messages each sender has stored: the next one is number `sent`.
CREATE TABLE send_counters (
    counter_key  BYTEA PRIMARY KEY,
    sent         BIGINT NOT NULL,
    last_day     BIGINT NOT NULL
);

-- The sender's n-th stored message (key HMAC(pepper, sender ‖ n)): its (sender, client id)
-- key and server id. Writing row n deletes row n - 1,024, so the table never grows past
-- the windows; lookups by random (sender, client id) key go through a hash index (see
-- 0003). The relay vacuums the table itself (Store::scrub), as each write leaves a dead
-- row and autovacuum may be off.
CREATE TABLE recent_sends (
    slot_key   BYTEA PRIMARY KEY,
    dedup_key  BYTEA NOT NULL,
    server_id  BYTEA NOT NULL,
    stored_on  BIGINT NOT NULL
);
CREATE INDEX idx_recent_sends_key ON recent_sends USING hash (dedup_key);
