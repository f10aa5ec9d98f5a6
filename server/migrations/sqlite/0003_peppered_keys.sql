-- Numbers and senders unreadable at rest. Phone hashes are stored peppered
-- (HMAC(pepper, phone_hash), computed by the relay, which also rewrites the rows stored
-- before this migration: store/at_rest.rs), and a delivered message is remembered by a
-- keyed hash of (sender, client id) instead of the two ids.
ALTER TABLE users RENAME COLUMN phone_hash TO phone_key;
ALTER TABLE auth_nonces RENAME COLUMN phone_hash TO phone_key;

CREATE TABLE delivery_records (
    dedup_key     BLOB PRIMARY KEY,
    server_id     BLOB NOT NULL,
    delivered_at  INTEGER NOT NULL
);
CREATE INDEX idx_delivery_records_at ON delivery_records (delivered_at);

-- Facts about the stored data itself: which pepper wrote it, which rows are converted.
CREATE TABLE relay_meta (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
