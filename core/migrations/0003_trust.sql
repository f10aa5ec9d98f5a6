-- Schema 3: what a hostile peer or relay may make the device hold, bounded.

-- Peers whose messages are acked and dropped unread. `sealed` holds the peer id.
CREATE TABLE blocked_peers (
    peer_hash  BLOB PRIMARY KEY,
    sealed     BLOB NOT NULL
) WITHOUT ROWID;

-- What each peer stored on this device in its current quota window. `sealed` holds the
-- peer id (so a data-key rotation can recompute the hash).
CREATE TABLE receive_quota (
    peer_hash     BLOB PRIMARY KEY,
    window_start  INTEGER NOT NULL,
    messages      INTEGER NOT NULL,
    bytes         INTEGER NOT NULL,
    sealed        BLOB NOT NULL
) WITHOUT ROWID;

-- Incoming messages dropped, by reason (forged id, blocked sender, over quota, bad
-- padding, undecryptable): what an attack cost the attacker, for the app to show.
CREATE TABLE dropped_messages (
    reason  TEXT PRIMARY KEY,
    count   INTEGER NOT NULL
) WITHOUT ROWID;

-- One-time prekeys: when each was made, and since when the relay no longer holds it
-- (claimed by someone, or never uploaded). Stale keys are deleted after a grace period.
ALTER TABLE prekeys ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE prekeys ADD COLUMN stale_since INTEGER;
-- Whether the relay confirmed the upload (keys of schema 2 were uploaded). Unconfirmed
-- keys are uploaded again, never counted as held, and never marked stale.
ALTER TABLE prekeys ADD COLUMN uploaded INTEGER NOT NULL DEFAULT 1;
CREATE INDEX prekeys_by_stale ON prekeys (stale_since) WHERE stale_since IS NOT NULL;
