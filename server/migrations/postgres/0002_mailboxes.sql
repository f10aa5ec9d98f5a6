-- What each recipient's mailbox holds (undelivered messages and their payload bytes), kept
-- in step with pending_messages by every write, so the quota check reads one row.
CREATE TABLE mailboxes (
    recipient_id  BYTEA PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    messages      BIGINT NOT NULL,
    bytes         BIGINT NOT NULL
);

INSERT INTO mailboxes (recipient_id, messages, bytes)
SELECT recipient_id, COUNT(*), SUM(CAST(length(payload) AS BIGINT))
FROM pending_messages GROUP BY recipient_id;
