-- Client store, schema 1. Every *sealed* column is AES-256-GCM under the data key, bound
-- to its table and row key. Columns named *_hash are HMAC-SHA256 lookup hashes; no peer id,
-- phone hash or key appears in clear.

-- Wrapped data key and the database id naming its wrapping secret.
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  BLOB NOT NULL
) WITHOUT ROWID;

-- This device's account: identity key pair, registration id, phone hash, relay user id.
CREATE TABLE account (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    sealed  BLOB NOT NULL
);

CREATE TABLE sessions (
    address_hash  BLOB PRIMARY KEY,
    sealed        BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE peer_identities (
    address_hash  BLOB PRIMARY KEY,
    sealed        BLOB NOT NULL
) WITHOUT ROWID;

CREATE TABLE prekeys (
    id      INTEGER PRIMARY KEY,
    sealed  BLOB NOT NULL
);

CREATE TABLE signed_prekeys (
    id          INTEGER PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    sealed      BLOB NOT NULL
);

CREATE TABLE kyber_prekeys (
    id          INTEGER PRIMARY KEY,
    created_at  INTEGER NOT NULL,
    sealed      BLOB NOT NULL
);

-- SHA-256 of (kyber prekey id, signed prekey id, base key) already used: rejects replayed
-- PQXDH handshakes against the last-resort Kyber key.
CREATE TABLE kyber_base_keys_seen (
    digest  BLOB PRIMARY KEY
) WITHOUT ROWID;

CREATE TABLE conversations (
    peer_hash      BLOB PRIMARY KEY,
    last_activity  INTEGER NOT NULL,
    sealed         BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX conversations_by_activity ON conversations (last_activity DESC);

CREATE TABLE messages (
    id         BLOB PRIMARY KEY,
    peer_hash  BLOB NOT NULL,
    sent_at    INTEGER NOT NULL,
    outgoing   INTEGER NOT NULL,
    state      INTEGER NOT NULL,
    sealed     BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX messages_by_peer_time ON messages (peer_hash, sent_at DESC, id DESC);

-- Relay message ids already decrypted and stored: makes at-least-once delivery exactly-once.
CREATE TABLE processed_messages (
    server_id     BLOB PRIMARY KEY,
    processed_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX processed_messages_by_time ON processed_messages (processed_at);
