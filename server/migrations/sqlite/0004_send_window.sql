-- A bounded de-duplication record (issue 17): instead of one row per delivered message for
-- 7 days, the relay remembers each sender's last RESEND_WINDOW (1,024) stored messages: at
-- most that many rows per sender and one counter, whatever the message rate
-- (store/send_window.rs). Keys are keyed hashes computed by the relay (src/pepper.rs): a
-- counter's key names no sender, and each row's key is unlinkable to the sender's other
-- rows without the pepper, and never reused. The records of deliveries before this
-- migration name no sender, so they cannot join a window: a resend of one of them is
-- stored again, and the recipient's device drops it (it knows the message id).
DROP TABLE delivery_records;

-- How many messages each sender has stored: the next one is number `sent`.
CREATE TABLE send_counters (
    counter_key  BLOB PRIMARY KEY,
    sent         INTEGER NOT NULL,
    last_day     INTEGER NOT NULL
);

-- The sender's n-th stored message (key HMAC(pepper, sender ‖ n)): its (sender, client id)
-- key and server id. Writing row n deletes row n - 1,024.
CREATE TABLE recent_sends (
    slot_key   BLOB PRIMARY KEY,
    dedup_key  BLOB NOT NULL,
    server_id  BLOB NOT NULL,
    stored_on  INTEGER NOT NULL
);
CREATE INDEX idx_recent_sends_key ON recent_sends (dedup_key);
