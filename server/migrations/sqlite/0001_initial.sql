-- Relay schema (SQLite). Ids are 16-byte UUIDs as BLOB; times are Unix milliseconds.
CREATE TABLE users (
    id                       BLOB PRIMARY KEY,
    phone_hash               TEXT NOT NULL UNIQUE,
    registration_id          INTEGER NOT NULL,
    identity_key             BLOB NOT NULL,
    signed_prekey_id         INTEGER NOT NULL,
    signed_prekey            BLOB NOT NULL,
    signed_prekey_signature  BLOB NOT NULL,
    kyber_prekey_id          INTEGER NOT NULL,
    kyber_prekey             BLOB NOT NULL,
    kyber_prekey_signature   BLOB NOT NULL,
    created_at               INTEGER NOT NULL,
    last_seen                INTEGER NOT NULL
);

CREATE TABLE one_time_prekeys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_id      INTEGER NOT NULL,
    public_key  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    used_at     INTEGER,
    UNIQUE (user_id, key_id)
);
CREATE INDEX idx_one_time_prekeys_available ON one_time_prekeys (user_id, id) WHERE used_at IS NULL;
CREATE INDEX idx_one_time_prekeys_used ON one_time_prekeys (used_at) WHERE used_at IS NOT NULL;

CREATE TABLE pending_messages (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            BLOB NOT NULL UNIQUE,
    recipient_id  BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender_id     BLOB NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id     BLOB NOT NULL,
    payload       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (sender_id, client_id)
);
CREATE INDEX idx_pending_messages_delivery ON pending_messages (recipient_id, seq);
CREATE INDEX idx_pending_messages_created ON pending_messages (created_at);

CREATE TABLE delivered_messages (
    sender_id     BLOB NOT NULL,
    client_id     BLOB NOT NULL,
    server_id     BLOB NOT NULL,
    delivered_at  INTEGER NOT NULL,
    PRIMARY KEY (sender_id, client_id)
);
CREATE INDEX idx_delivered_messages_at ON delivered_messages (delivered_at);

CREATE TABLE auth_nonces (
    nonce       BLOB PRIMARY KEY,
    phone_hash  TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX idx_auth_nonces_expiry ON auth_nonces (expires_at);
