//! Each sender's window of remembered messages (migration 0004): the relay keeps the
//! (sender, client id) key and server id of a sender's last `RESEND_WINDOW` stored
//! messages, so a resend after delivery answers its first server id while the rows stay
//! bounded per sender, whatever the message rate. A sender's n-th stored message gets a
//! row keyed by its position n, and writing it deletes position n − `RESEND_WINDOW`. Keys
//! are never reused, so neither one copy of the database nor two taken apart group a
//! sender's rows. Both backends write the window through the rules here.

use std::collections::HashMap;

use privcomm_protocol::limits::RESEND_WINDOW;
use uuid::Uuid;

use crate::pepper::{DeliveryKey, Pepper};

/// A message the relay stored, to remember in its sender's window.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    /// Who sent it.
    pub sender: Uuid,
    /// The sender's id for it.
    pub client_id: Uuid,
    /// The id it was stored under.
    pub server_id: Uuid,
    /// The day it was stored (Unix milliseconds at midnight UTC).
    pub day: i64,
}

/// The position a window row written at `position` evicts, if any.
pub(crate) fn evicted_by(position: u64) -> Option<u64> {
    position.checked_sub(u64::from(RESEND_WINDOW))
}

/// How much one sender's counter grows in a batch.
#[derive(Clone, Debug)]
pub(crate) struct CounterBump {
    /// `Pepper::send_counter_key` of the sender.
    pub key: DeliveryKey,
    /// The sender.
    pub sender: Uuid,
    /// Messages stored in the batch.
    pub added: i64,
    /// The latest day among them.
    pub day: i64,
}

/// The counters `sent` grows, sorted by key: every batch locks counter rows in the same
/// order, so concurrent batches never deadlock on them.
pub(crate) fn bumps(sent: &[Sent], pepper: &Pepper) -> Vec<CounterBump> {
    let mut by_sender: HashMap<Uuid, CounterBump> = HashMap::new();
    for s in sent {
        let bump = by_sender.entry(s.sender).or_insert_with(|| CounterBump {
            key: pepper.send_counter_key(s.sender),
            sender: s.sender,
            added: 0,
            day: s.day,
        });
        bump.added = bump.added.saturating_add(1);
        bump.day = bump.day.max(s.day);
    }
    let mut bumps: Vec<CounterBump> = by_sender.into_values().collect();
    bumps.sort_unstable_by_key(|b| b.key);
    bumps
}

/// One window row to write.
#[derive(Clone, Debug)]
pub(crate) struct SlotWrite {
    /// `Pepper::send_slot_key` of the sender and position.
    pub slot_key: DeliveryKey,
    /// The key of the row this one pushes out of the window, if any.
    pub evicts: Option<DeliveryKey>,
    /// `Pepper::delivery_key` of the sender and client id.
    pub dedup_key: DeliveryKey,
    /// The id the message was stored under.
    pub server_id: Uuid,
    /// The day it was stored.
    pub day: i64,
}

/// The window rows for `sent` (in the order stored), given each sender's count after the
/// batch (`totals`, from the counters' update). A sender's messages take consecutive
/// positions; of more than a window's worth in one batch only the last window is written,
/// so no row is written or evicted twice in a batch.
pub(crate) fn slot_writes(
    sent: &[Sent],
    bumps: &[CounterBump],
    totals: &HashMap<DeliveryKey, i64>,
    pepper: &Pepper,
) -> Vec<SlotWrite> {
    // Per sender: (count before the batch, messages in the batch, taken so far).
    let mut next: HashMap<Uuid, (i64, i64, i64)> = bumps
        .iter()
        .filter_map(|b| {
            let total = *totals.get(&b.key)?;
            Some((b.sender, (total.saturating_sub(b.added), b.added, 0)))
        })
        .collect();
    let window = i64::from(RESEND_WINDOW);
    let mut writes = Vec::with_capacity(sent.len());
    for s in sent {
        let Some((before, added, taken)) = next.get_mut(&s.sender) else {
            continue;
        };
        let nth = *taken;
        *taken = taken.saturating_add(1);
        if nth < added.saturating_sub(window) {
            continue;
        }
        let position = u64::try_from(before.saturating_add(nth)).unwrap_or(0);
        writes.push(SlotWrite {
            slot_key: pepper.send_slot_key(s.sender, position),
            evicts: evicted_by(position).map(|old| pepper.send_slot_key(s.sender, old)),
            dedup_key: pepper.delivery_key(s.sender, s.client_id),
            server_id: s.server_id,
            day: s.day,
        });
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent_by(sender: Uuid, n: usize) -> Vec<Sent> {
        (0..n)
            .map(|_| Sent {
                sender,
                client_id: Uuid::new_v4(),
                server_id: Uuid::new_v4(),
                day: 0,
            })
            .collect()
    }

    #[test]
    fn a_row_evicts_the_one_a_window_before_it() {
        let window = u64::from(RESEND_WINDOW);
        assert_eq!(evicted_by(0), None);
        assert_eq!(evicted_by(window - 1), None);
        assert_eq!(evicted_by(window), Some(0));
        assert_eq!(evicted_by(3 * window + 5), Some(2 * window + 5));
    }

    #[test]
    fn a_batch_takes_consecutive_slots_after_the_counter() {
        let pepper = Pepper::new(b"test pepper");
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let mut sent = sent_by(alice, 3);
        sent.extend(sent_by(bob, 2));
        let bumps = bumps(&sent, &pepper);
        assert_eq!(bumps.len(), 2);
        let totals: HashMap<DeliveryKey, i64> = bumps
            .iter()
            .map(|b| (b.key, if b.sender == alice { 10 } else { 2 }))
            .collect();
        let writes = slot_writes(&sent, &bumps, &totals, &pepper);
        let expected: Vec<DeliveryKey> = [(alice, 7), (alice, 8), (alice, 9), (bob, 0), (bob, 1)]
            .iter()
            .map(|&(sender, position)| pepper.send_slot_key(sender, position))
            .collect();
        let got: Vec<DeliveryKey> = writes.iter().map(|w| w.slot_key).collect();
        assert_eq!(got, expected);
        assert!(writes.iter().all(|w| w.evicts.is_none()));
    }

    #[test]
    fn more_than_a_window_in_one_batch_writes_each_slot_once() {
        let pepper = Pepper::new(b"test pepper");
        let alice = Uuid::new_v4();
        let n = RESEND_WINDOW as usize + 10;
        let sent = sent_by(alice, n);
        let bumps = bumps(&sent, &pepper);
        let totals = HashMap::from([(bumps[0].key, n as i64)]);
        let writes = slot_writes(&sent, &bumps, &totals, &pepper);
        assert_eq!(writes.len(), RESEND_WINDOW as usize);
        let distinct: std::collections::HashSet<DeliveryKey> =
            writes.iter().map(|w| w.slot_key).collect();
        assert_eq!(distinct.len(), RESEND_WINDOW as usize);
        assert_eq!(
            writes.last().map(|w| w.server_id),
            Some(sent[n - 1].server_id),
            "the latest messages are the ones remembered"
        );
        let evicted: std::collections::HashSet<DeliveryKey> =
            writes.iter().filter_map(|w| w.evicts).collect();
        assert_eq!(evicted.len(), 10, "positions 0..10, never written");
        assert!(evicted.is_disjoint(&distinct));
    }
}
