-- Schema 2: the persistent outbox and the contacts (peer id ↔ phone hash).

-- Messages waiting for the relay's `sent`, in send order. `sealed` holds the peer id and
-- the plaintext envelope; it is Signal-encrypted only when flushed.
CREATE TABLE outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    sealed      BLOB NOT NULL
);

-- Who a peer id is: its phone hash, needed to fetch a prekey bundle.
CREATE TABLE contacts (
    peer_hash  BLOB PRIMARY KEY,
    sealed     BLOB NOT NULL
) WITHOUT ROWID;
