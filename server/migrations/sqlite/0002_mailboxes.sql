-- What each recipient's mailbox holds (undelivered messages and their payload bytes), kept
-- in step with pending_messages by every write, so the quota check reads one row.
CREATE TABLE mailboxes (
    recipient_id  BLOB PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    messages      INTEGER NOT NULL,
    bytes         INTEGER NOT NULL
);

INSERT INTO mailboxes (recipient_id, messages, bytes)
SELECT recipient_id, COUNT(*), SUM(length(payload)) FROM pending_messages GROUP BY recipient_id;
