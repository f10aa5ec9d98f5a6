//! Which stored messages a connection should write next: a pure state machine, so the
//! ordering and no-loss rules can be tested without sockets or a database.
//!
//! Storage is the source of truth. A connection scans its recipient's pending messages in
//! `seq` order, page by page, keeping at most `window` unacknowledged. Once the scan reaches
//! the end the connection is *caught up* and messages pushed to it live are written directly.
//! Anything that might have been missed (a full window, a dropped push, a message that
//! committed behind the scan cursor) sends it back to scanning.

use std::collections::{HashSet, VecDeque};

use uuid::Uuid;

use crate::store::PendingMessage;

/// How many acked ids are remembered, so a late live push of an acked message is not resent.
const RECENTLY_ACKED: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// Everything in storage has been written; live pushes go straight out.
    CaughtUp,
    /// Reading storage from after this `seq`.
    From(i64),
}

/// How a delivered message was found (the `path` label of the delivery metric).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Path {
    /// Read from storage at connect.
    #[default]
    Backlog,
    /// Handed over live by this instance's writer.
    Push,
    /// Read from storage after a wake-up from another instance over the bus.
    Bus,
    /// Read from storage on a rescan: a dropped push, the ping cycle, a bus reconnect.
    Rescan,
}

impl Path {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backlog => "backlog",
            Self::Push => "push",
            Self::Bus => "bus",
            Self::Rescan => "rescan",
        }
    }
}

/// What to write after a page was read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Messages to write, in order.
    pub to_send: Vec<PendingMessage>,
    /// The backlog present at connect has now been written in full (sent once).
    pub queue_empty: bool,
    /// What started the scan that read them.
    pub path: Path,
}

/// Delivery state of one connection.
#[derive(Debug)]
pub struct Delivery {
    window: usize,
    page: usize,
    in_flight: HashSet<Uuid>,
    acked: HashSet<Uuid>,
    acked_order: VecDeque<Uuid>,
    scan: Scan,
    /// What started the current scan.
    scan_path: Path,
    /// Where the last scan that reached the end stopped: everything stored at or below it
    /// then has been seen.
    seen_up_to: i64,
    rescan: bool,
    queue_empty_sent: bool,
}

impl Delivery {
    /// A fresh connection: scan the backlog from the start.
    pub fn new(window: usize, page: usize) -> Self {
        Self {
            window: window.max(1),
            page: page.max(1),
            in_flight: HashSet::new(),
            acked: HashSet::new(),
            acked_order: VecDeque::new(),
            scan: Scan::From(0),
            scan_path: Path::Backlog,
            seen_up_to: 0,
            rescan: false,
            queue_empty_sent: false,
        }
    }

    /// Messages written but not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The next storage read, `(after_seq, limit)`, if one is due and the window has room.
    /// A whole page is read even when the window has room for fewer: rows already in
    /// flight come back too (a rescan re-reads them), and a limit of the room left would
    /// make a rescan of a nearly full window one query per row.
    pub fn next_fetch(&self) -> Option<(i64, usize)> {
        match self.scan {
            Scan::From(after) if self.in_flight.len() < self.window => Some((after, self.page)),
            _ => None,
        }
    }

    /// Takes the rows read for `next_fetch` (called with the same `limit`).
    pub fn on_fetched(&mut self, rows: Vec<PendingMessage>, limit: usize) -> Page {
        let mut page = Page {
            path: self.scan_path,
            ..Page::default()
        };
        let mut reached_end = rows.len() < limit;
        for row in rows {
            let known = self.in_flight.contains(&row.id) || self.acked.contains(&row.id);
            if !known && self.in_flight.len() >= self.window {
                // The window filled: the scan resumes here once acks make room.
                reached_end = false;
                break;
            }
            if let Scan::From(cursor) = &mut self.scan {
                *cursor = (*cursor).max(row.seq);
            }
            if known {
                continue;
            }
            self.in_flight.insert(row.id);
            page.to_send.push(row);
        }
        if reached_end {
            if let Scan::From(cursor) = self.scan {
                self.seen_up_to = self.seen_up_to.max(cursor);
            }
            if self.rescan {
                self.rescan = false;
                self.scan = Scan::From(0);
            } else {
                self.scan = Scan::CaughtUp;
                if !self.queue_empty_sent {
                    self.queue_empty_sent = true;
                    page.queue_empty = true;
                }
            }
        }
        page
    }

    /// A message stored for this recipient while connected. Returns it if it should be
    /// written now; otherwise a later scan will find it.
    pub fn on_push(&mut self, message: PendingMessage) -> Option<PendingMessage> {
        if self.in_flight.contains(&message.id) || self.acked.contains(&message.id) {
            return None;
        }
        match self.scan {
            Scan::CaughtUp if self.in_flight.len() < self.window => {
                self.in_flight.insert(message.id);
                Some(message)
            }
            Scan::CaughtUp => {
                // Window full: resume scanning just before it; it stays in storage until then.
                self.scan = Scan::From(message.seq - 1);
                None
            }
            Scan::From(cursor) => {
                // Committed behind the cursor (PostgreSQL assigns seq before commit): the
                // current scan has passed it, so scan once more from the start when done.
                if message.seq <= cursor {
                    self.rescan = true;
                }
                None
            }
        }
    }

    /// A live push was dropped because the connection's queue was full, or wake-ups may
    /// have been lost: read the whole mailbox again.
    pub fn on_push_dropped(&mut self) {
        match self.scan {
            Scan::CaughtUp => {
                self.scan = Scan::From(0);
                self.scan_path = Path::Rescan;
            }
            Scan::From(_) => self.rescan = true,
        }
    }

    /// Another instance stored a message for this recipient at `seq` (the bus carries no
    /// payload): read storage from there, or from where the last full scan ended if that is
    /// earlier. A wake-up may be lost (an instance killed between its commit and its
    /// publish); the next one then brings the messages it announced along, in order,
    /// instead of leaving them to the next rescan, long after the ones stored later (a
    /// Signal session may have ratcheted past their chain by then).
    pub fn on_wake(&mut self, seq: i64) {
        match self.scan {
            Scan::CaughtUp => {
                self.scan = Scan::From(seq.saturating_sub(1).min(self.seen_up_to));
                self.scan_path = Path::Bus;
            }
            // Committed behind the cursor: scan once more from the start when done.
            Scan::From(cursor) if seq <= cursor => self.rescan = true,
            // The current scan reaches it.
            Scan::From(_) => {}
        }
    }

    /// True when everything in storage has been written (live pushes go straight out).
    pub fn is_caught_up(&self) -> bool {
        self.scan == Scan::CaughtUp
    }

    /// Where the last scan that reached the end stopped (published for the bus reader,
    /// which reads for a wake-up from here, as `on_wake` would).
    pub fn seen_up_to(&self) -> i64 {
        self.seen_up_to
    }

    /// Rows the bus reader read for a wake-up at `woken`: `rows` are this recipient's
    /// messages after `after`, at most `limit`. Taken as a page of a scan from `after` when
    /// the connection is caught up and had seen everything up to `after`; otherwise (it is
    /// scanning, or `after` skips something unseen) they are dropped and the wake-up is
    /// handled as `on_wake` does, by reading storage itself.
    pub fn on_bus_read(
        &mut self,
        after: i64,
        woken: i64,
        rows: Vec<PendingMessage>,
        limit: usize,
    ) -> Page {
        if self.scan == Scan::CaughtUp && after <= self.seen_up_to {
            self.scan = Scan::From(after);
            self.scan_path = Path::Bus;
            self.on_fetched(rows, limit)
        } else {
            self.on_wake(woken);
            Page {
                path: self.scan_path,
                ..Page::default()
            }
        }
    }

    /// The client acknowledged `id`.
    pub fn on_ack(&mut self, id: Uuid) {
        self.in_flight.remove(&id);
        if self.acked.insert(id) {
            self.acked_order.push_back(id);
            if self.acked_order.len() > RECENTLY_ACKED {
                if let Some(old) = self.acked_order.pop_front() {
                    self.acked.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: i64) -> PendingMessage {
        PendingMessage {
            seq,
            id: Uuid::from_u128(seq as u128),
            sender: Uuid::nil(),
            recipient: Uuid::nil(),
            payload: Default::default(),
            created_at: 0,
        }
    }

    fn seqs(page: &Page) -> Vec<i64> {
        page.to_send.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn backlog_is_paged_within_window_then_queue_empty_once() {
        let mut d = Delivery::new(3, 2);
        assert_eq!(d.next_fetch(), Some((0, 2)));
        let p = d.on_fetched(vec![msg(1), msg(2)], 2);
        assert_eq!(seqs(&p), [1, 2]);
        assert!(!p.queue_empty);
        assert_eq!(
            d.next_fetch(),
            Some((2, 2)),
            "a whole page, whatever the room"
        );
        let p = d.on_fetched(vec![msg(3), msg(4)], 2);
        assert_eq!(seqs(&p), [3], "only what fits the window");
        assert_eq!(d.next_fetch(), None, "window full");
        d.on_ack(msg(1).id);
        assert_eq!(
            d.next_fetch(),
            Some((3, 2)),
            "resumes after the last row sent"
        );
        let p = d.on_fetched(vec![msg(4)], 2);
        assert_eq!(seqs(&p), [4]);
        assert!(p.queue_empty);
        assert_eq!(d.next_fetch(), None);
        // Caught up: live pushes go straight out; a second queue_empty never comes.
        d.on_ack(msg(2).id);
        assert_eq!(d.on_push(msg(5)).map(|m| m.seq), Some(5));
        assert_eq!(d.on_push(msg(5)), None, "already in flight");
    }

    #[test]
    fn a_rescan_of_a_nearly_full_window_reads_pages_not_rows() {
        let backlog: Vec<_> = (1..=255).map(msg).collect();
        // Runs the scan against `backlog` until it stops: (reads, messages sent).
        let scan = |d: &mut Delivery| {
            let (mut reads, mut sent) = (0, 0);
            while let Some((after, limit)) = d.next_fetch() {
                reads += 1;
                let rows = backlog.iter().filter(|m| m.seq > after).take(limit);
                sent += d.on_fetched(rows.cloned().collect(), limit).to_send.len();
            }
            (reads, sent)
        };
        let mut d = Delivery::new(256, 128);
        assert_eq!(scan(&mut d), (2, 255));
        // Never acked: the rescan of the ping cycle reads the 255 again, a page at a time.
        d.on_push_dropped();
        assert_eq!(scan(&mut d), (2, 0), "two pages, not one query per row");
    }

    #[test]
    fn push_into_full_window_resumes_scan_before_it() {
        let mut d = Delivery::new(1, 10);
        let _ = d.on_fetched(vec![], 1);
        assert!(d.on_push(msg(5)).is_some());
        assert_eq!(d.on_push(msg(6)), None);
        assert_eq!(d.next_fetch(), None);
        d.on_ack(msg(5).id);
        assert_eq!(d.next_fetch(), Some((5, 10)));
        let p = d.on_fetched(vec![msg(6)], 10);
        assert_eq!(seqs(&p), [6]);
    }

    #[test]
    fn message_committed_behind_cursor_triggers_rescan() {
        let mut d = Delivery::new(10, 10);
        let _ = d.on_fetched(vec![msg(2), msg(3)], 10);
        // Caught up after this page (2 < 10): simulate the late commit arriving while scanning.
        let mut d2 = Delivery::new(10, 2);
        let _ = d2.on_fetched(vec![msg(2), msg(3)], 2);
        assert_eq!(d2.on_push(msg(1)), None);
        let p = d2.on_fetched(vec![], 2);
        assert!(!p.queue_empty, "rescan pending");
        assert_eq!(d2.next_fetch(), Some((0, 2)));
        let p = d2.on_fetched(vec![msg(1), msg(2), msg(3)], 2);
        assert_eq!(seqs(&p), [1], "in-flight rows are not resent");
        let _ = d;
    }

    #[test]
    fn a_wake_up_reads_from_its_position_and_names_the_bus() {
        let mut d = Delivery::new(10, 10);
        let p = d.on_fetched(vec![msg(5)], 10);
        assert_eq!(p.path, Path::Backlog);
        d.on_ack(msg(5).id);
        // The wake-up for 6 was lost: the one for 7 reads from where the scan ended.
        d.on_wake(7);
        assert_eq!(d.next_fetch(), Some((5, 10)));
        let p = d.on_fetched(vec![msg(6), msg(7)], 10);
        assert_eq!((seqs(&p), p.path), (vec![6, 7], Path::Bus));
        d.on_wake(8);
        assert_eq!(
            d.next_fetch(),
            Some((7, 10)),
            "from the end of the last scan"
        );
        let p = d.on_fetched(vec![msg(8)], 10);
        assert_eq!(seqs(&p), [8]);
        d.on_ack(msg(8).id);
        // A wake-up for a position the scan already passed, while scanning: once more.
        d.on_wake(9);
        d.on_wake(8);
        let p = d.on_fetched(vec![msg(9)], 1);
        assert_eq!(seqs(&p), [9]);
        assert_eq!(d.next_fetch(), Some((9, 10)));
        let _ = d.on_fetched(vec![], 10);
        assert_eq!(d.next_fetch(), Some((0, 10)), "rescan from the start");
        let p = d.on_fetched(vec![msg(6), msg(7), msg(8), msg(9), msg(10)], 10);
        assert_eq!(seqs(&p), [10], "rows in flight or acked are not sent again");
    }

    #[test]
    fn a_bus_read_is_a_page_when_caught_up_and_a_wake_up_otherwise() {
        let mut d = Delivery::new(3, 10);
        let _ = d.on_fetched(vec![msg(5)], 10);
        assert_eq!(d.seen_up_to(), 5);
        // Caught up, and the read starts where the last scan ended: its rows go out.
        let p = d.on_bus_read(5, 7, vec![msg(6), msg(7)], 8);
        assert_eq!((seqs(&p), p.path), (vec![6, 7], Path::Bus));
        assert_eq!((d.next_fetch(), d.seen_up_to()), (None, 7), "caught up");
        d.on_ack(msg(5).id);
        // A read that starts past something unseen is only a wake-up: scan from 7.
        let p = d.on_bus_read(8, 9, vec![msg(9)], 8);
        assert!(p.to_send.is_empty());
        assert_eq!(d.next_fetch(), Some((7, 10)));
        let p = d.on_fetched(vec![msg(8), msg(9)], 10);
        assert_eq!(seqs(&p), [8], "the window holds 3");
        assert_eq!(d.next_fetch(), None, "window full");
        // A read while scanning: the scan reaches it.
        let p = d.on_bus_read(8, 10, vec![msg(10)], 8);
        assert!(p.to_send.is_empty());
        for seq in [6, 7] {
            d.on_ack(msg(seq).id);
        }
        assert_eq!(d.next_fetch(), Some((8, 10)));
        let p = d.on_fetched(vec![msg(9), msg(10)], 10);
        assert_eq!(seqs(&p), [9, 10]);
        // A full read (as many rows as its limit): the connection reads on by itself.
        for seq in [8, 9, 10] {
            d.on_ack(msg(seq).id);
        }
        let p = d.on_bus_read(10, 11, vec![msg(11), msg(12)], 2);
        assert_eq!(seqs(&p), [11, 12]);
        assert_eq!(d.next_fetch(), Some((12, 10)));
    }

    #[test]
    fn acked_message_is_not_resent_by_late_push_or_scan() {
        let mut d = Delivery::new(10, 10);
        let p = d.on_fetched(vec![msg(1)], 10);
        assert_eq!(seqs(&p), [1]);
        d.on_ack(msg(1).id);
        assert_eq!(d.on_push(msg(1)), None);
        d.on_push_dropped();
        let p = d.on_fetched(vec![msg(1), msg(2)], 10);
        assert_eq!(seqs(&p), [2]);
    }
}
