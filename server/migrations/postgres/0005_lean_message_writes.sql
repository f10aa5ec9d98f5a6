-- Leaner writes per stored message (issue 17): message rows without foreign keys. Each
-- stored message checked that its sender and recipient exist by locking both `users`
-- rows (FOR KEY SHARE): two row locks per message, each a WAL record and a dirtied page,
-- and a multixact whenever two group commits locked the same user (every active user is
-- in most commits). Under load they were half of the database's time per message. The
-- relay never deletes a user (a new registration of a number updates its row and deletes
-- the old device's messages itself), the sender is the authenticated caller, and the
-- batch insert stores a message only if its recipient's row exists with the expected
-- registration id: the keys checked nothing the relay does not.
ALTER TABLE pending_messages
    DROP CONSTRAINT pending_messages_recipient_id_fkey,
    DROP CONSTRAINT pending_messages_sender_id_fkey;
