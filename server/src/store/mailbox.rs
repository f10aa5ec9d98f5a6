//! Mailbox accounting inside one write batch: what each recipient's mailbox held when the
//! batch began, what the batch adds and removes, and the net change to write back.
//!
//! The change is written as a delta (`messages = messages + Δ`), not as a total, so a purge
//! or another relay instance updating the same row in between is never overwritten.

use std::collections::HashMap;

use uuid::Uuid;

use super::MailboxUsage;

/// Per-recipient usage seen by one batch.
#[derive(Debug, Default)]
pub(super) struct MailboxLedger {
    /// Usage when first looked at in this batch.
    loaded: HashMap<Uuid, MailboxUsage>,
    /// What this batch changed.
    delta: HashMap<Uuid, MailboxUsage>,
}

impl MailboxLedger {
    /// True once `recipient`'s starting usage is known.
    pub(super) fn knows(&self, recipient: &Uuid) -> bool {
        self.loaded.contains_key(recipient)
    }

    /// Records `recipient`'s usage as read from storage.
    pub(super) fn load(&mut self, recipient: Uuid, usage: MailboxUsage) {
        self.loaded.entry(recipient).or_insert(usage);
    }

    /// Usage now: as loaded, plus this batch's changes.
    pub(super) fn usage(&self, recipient: &Uuid) -> MailboxUsage {
        let base = self.loaded.get(recipient).copied().unwrap_or_default();
        let delta = self.delta.get(recipient).copied().unwrap_or_default();
        MailboxUsage {
            messages: base.messages.saturating_add(delta.messages),
            bytes: base.bytes.saturating_add(delta.bytes),
        }
    }

    /// A message of `bytes` was stored for `recipient`.
    pub(super) fn added(&mut self, recipient: Uuid, bytes: usize) {
        let d = self.delta.entry(recipient).or_default();
        d.messages = d.messages.saturating_add(1);
        d.bytes = d
            .bytes
            .saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A message of `bytes` was deleted from `recipient`'s mailbox.
    pub(super) fn removed(&mut self, recipient: Uuid, bytes: i64) {
        let d = self.delta.entry(recipient).or_default();
        d.messages = d.messages.saturating_sub(1);
        d.bytes = d.bytes.saturating_sub(bytes);
    }

    /// The net changes to write back, one per recipient that changed.
    pub(super) fn changes(&self) -> Vec<(Uuid, MailboxUsage)> {
        self.delta
            .iter()
            .filter(|(_, d)| d.messages != 0 || d.bytes != 0)
            .map(|(r, d)| (*r, *d))
            .collect()
    }
}

/// Adds a delta to a mailbox row, creating it if needed (same SQL on SQLite and PostgreSQL).
pub(super) const APPLY_DELTA_SQL: &str =
    "INSERT INTO mailboxes (recipient_id, messages, bytes) VALUES ($1, $2, $3)
     ON CONFLICT (recipient_id) DO UPDATE SET
         messages = mailboxes.messages + excluded.messages,
         bytes = mailboxes.bytes + excluded.bytes";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_the_batch_changes_to_what_was_loaded() {
        let r = Uuid::new_v4();
        let mut ledger = MailboxLedger::default();
        assert!(!ledger.knows(&r));
        ledger.load(
            r,
            MailboxUsage {
                messages: 2,
                bytes: 100,
            },
        );
        ledger.added(r, 10);
        ledger.added(r, 10);
        ledger.removed(r, 30);
        assert_eq!(
            ledger.usage(&r),
            MailboxUsage {
                messages: 3,
                bytes: 90
            }
        );
        assert_eq!(
            ledger.changes(),
            [(
                r,
                MailboxUsage {
                    messages: 1,
                    bytes: -10
                }
            )]
        );
        // A batch whose changes cancel out writes nothing back.
        ledger.added(r, 0);
        ledger.removed(r, -10);
        ledger.removed(r, 0);
        assert!(ledger.changes().is_empty());
    }
}
