-- Relay schema (PostgreSQL). Ids are 16-byte UUIDs as BYTEA; times are Unix milliseconds.
CREATE TABLE users (
    id                       BYTEA PRIMARY KEY,
    phone_hash               TEXT NOT NULL UNIQUE,
    registration_id          BIGINT NOT NULL,
    identity_key             BYTEA NOT NULL,
    signed_prekey_id         BIGINT NOT NULL,
    signed_prekey            BYTEA NOT NULL,
    signed_prekey_signature  BYTEA NOT NULL,
    kyber_prekey_id          BIGINT NOT NULL,
    kyber_prekey             BYTEA NOT NULL,
    kyber_prekey_signature   BYTEA NOT NULL,
    created_at               BIGINT NOT NULL,
    last_seen                BIGINT NOT NULL
);

CREATE TABLE one_time_prekeys (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BYTEA NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    key_id      BIGINT NOT NULL,
    public_key  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    used_at     BIGINT,
    UNIQUE (user_id, key_id)
);
CREATE INDEX idx_one_time_prekeys_available ON one_time_prekeys (user_id, id) WHERE used_at IS NULL;
CREATE INDEX idx_one_time_prekeys_used ON one_time_prekeys (used_at) WHERE used_at IS NOT NULL;

CREATE TABLE pending_messages (
    seq           BIGSERIAL PRIMARY KEY,
    id            BYTEA NOT NULL UNIQUE,
    recipient_id  BYTEA NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    sender_id     BYTEA NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id     BYTEA NOT NULL,
    payload       BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    UNIQUE (sender_id, client_id)
);
CREATE INDEX idx_pending_messages_delivery ON pending_messages (recipient_id, seq);
CREATE INDEX idx_pending_messages_created ON pending_messages (created_at);

CREATE TABLE delivered_messages (
    sender_id     BYTEA NOT NULL,
    client_id     BYTEA NOT NULL,
    server_id     BYTEA NOT NULL,
    delivered_at  BIGINT NOT NULL,
    PRIMARY KEY (sender_id, client_id)
);
CREATE INDEX idx_delivered_messages_at ON delivered_messages (delivered_at);

CREATE TABLE auth_nonces (
    nonce       BYTEA PRIMARY KEY,
    phone_hash  TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX idx_auth_nonces_expiry ON auth_nonces (expires_at);
