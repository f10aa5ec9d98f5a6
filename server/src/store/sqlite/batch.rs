//! A group commit on SQLite, on the writer thread: every message, ack and `last_seen` of
//! the batch in one transaction, through statements prepared once per connection.

use std::collections::HashSet;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::pepper::Pepper;

use super::super::mailbox::{MailboxLedger, APPLY_DELTA_SQL};
use super::super::{day_of, MailboxUsage, StoreError, StoreOutcome, WriteBatch, WriteBatchOutcome};

/// Applies `batch` in one transaction.
pub(super) fn apply(
    conn: &mut Connection,
    batch: &WriteBatch,
    pepper: &Pepper,
) -> rusqlite::Result<WriteBatchOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = WriteBatchOutcome::default();
    let mut mailboxes = MailboxLedger::default();
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO pending_messages
                 (id, recipient_id, sender_id, client_id, payload, created_at, size)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?8
             WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2
                           AND (?9 IS NULL OR registration_id = ?9))
               AND NOT EXISTS (SELECT 1 FROM delivery_records WHERE dedup_key = ?7)
             ON CONFLICT (sender_id, client_id) DO NOTHING
             RETURNING seq",
        )?;
        let mut existing = tx.prepare_cached(
            "SELECT id FROM pending_messages WHERE sender_id = ?1 AND client_id = ?2
             UNION ALL
             SELECT server_id FROM delivery_records WHERE dedup_key = ?3",
        )?;
        let mut usage =
            tx.prepare_cached("SELECT messages, bytes FROM mailboxes WHERE recipient_id = ?1")?;
        let mut registration =
            tx.prepare_cached("SELECT registration_id FROM users WHERE id = ?1")?;
        for m in &batch.messages {
            let (id, recipient, sender, client_id) = (
                m.id.as_bytes(),
                m.recipient.as_bytes(),
                m.sender.as_bytes(),
                m.client_id.as_bytes(),
            );
            if !mailboxes.knows(&m.recipient) {
                let held = usage
                    .query_row(params![recipient], |row| {
                        Ok(MailboxUsage {
                            messages: row.get(0)?,
                            bytes: row.get(1)?,
                        })
                    })
                    .optional()?
                    .unwrap_or_default();
                mailboxes.load(m.recipient, held);
            }
            let size = u64::try_from(m.payload.len()).unwrap_or(u64::MAX);
            let dedup_key = pepper.delivery_key(m.sender, m.client_id);
            let seq: Option<i64> = if batch.quota.admits(mailboxes.usage(&m.recipient), size) {
                insert
                    .query_row(
                        params![
                            id,
                            recipient,
                            sender,
                            client_id,
                            &m.payload[..],
                            m.created_at,
                            &dedup_key[..],
                            i64::try_from(m.payload.len()).unwrap_or(i64::MAX),
                            m.recipient_registration_id.map(i64::from)
                        ],
                        |row| row.get(0),
                    )
                    .optional()?
            } else {
                None
            };
            let result = match seq {
                Some(seq) => {
                    mailboxes.added(m.recipient, m.payload.len());
                    Ok(StoreOutcome::Stored(m.stored_as(seq)))
                }
                None => {
                    // Stored before (pending or delivered, also earlier in this batch), the
                    // mailbox is full, or the recipient does not exist.
                    let first: Option<Vec<u8>> = existing
                        .query_row(params![sender, client_id, &dedup_key[..]], |row| row.get(0))
                        .optional()?;
                    match first.and_then(|bytes| Uuid::from_slice(&bytes).ok()) {
                        Some(server_id) => Ok(StoreOutcome::Duplicate { server_id }),
                        None if !batch.quota.admits(mailboxes.usage(&m.recipient), size) => {
                            Err(StoreError::MailboxFull)
                        }
                        None => {
                            let registered: Option<i64> = registration
                                .query_row(params![recipient], |row| row.get(0))
                                .optional()?;
                            match registered {
                                Some(_) => Err(StoreError::StaleRecipient),
                                None => Err(StoreError::MissingReference),
                            }
                        }
                    }
                }
            };
            outcome.messages.push(result);
        }

        let mut delete = tx.prepare_cached(
            "DELETE FROM pending_messages WHERE id = ?1 AND recipient_id = ?2
             RETURNING sender_id, client_id, size",
        )?;
        let mut record = tx.prepare_cached(
            "INSERT INTO delivery_records (dedup_key, server_id, delivered_at)
             VALUES (?1, ?2, ?3) ON CONFLICT (dedup_key) DO NOTHING",
        )?;
        let mut seen = HashSet::new();
        for ack in &batch.acks {
            // A repeated ack in the same batch finds the row already gone.
            if !seen.insert(ack.id) {
                outcome.acks.push(false);
                continue;
            }
            let id = ack.id.as_bytes();
            let deleted: Option<(Vec<u8>, Vec<u8>, i64)> = delete
                .query_row(params![id, ack.recipient.as_bytes()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()?;
            if let Some((sender, client_id, size)) = &deleted {
                let (Ok(sender), Ok(client_id)) =
                    (Uuid::from_slice(sender), Uuid::from_slice(client_id))
                else {
                    return Err(rusqlite::Error::InvalidColumnType(
                        0,
                        "sender_id or client_id is not a 16-byte id".into(),
                        rusqlite::types::Type::Blob,
                    ));
                };
                let key = pepper.delivery_key(sender, client_id);
                record.execute(params![&key[..], id, batch.now])?;
                mailboxes.removed(ack.recipient, *size);
            }
            outcome.acks.push(deleted.is_some());
        }

        let mut touch = tx.prepare_cached("UPDATE users SET last_seen = ?2 WHERE id = ?1")?;
        for user in &batch.touches {
            touch.execute(params![user.as_bytes(), day_of(batch.now)])?;
        }

        let mut apply_delta = tx.prepare_cached(APPLY_DELTA_SQL)?;
        for (recipient, delta) in mailboxes.changes() {
            apply_delta.execute(params![recipient.as_bytes(), delta.messages, delta.bytes])?;
        }
    }
    tx.commit()?;
    Ok(outcome)
}
