//! Conversations, message history and the processed-message ids.

use rusqlite::{params, Row};
use uuid::Uuid;

use super::Store;
use crate::crypto::codec::{Reader, Writer};
use crate::error::{CoreError, CoreResult};

const MESSAGES: &str = "messages";
const CONVERSATIONS: &str = "conversations";

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Outgoing, in the outbox, not yet accepted by the relay.
    Queued,
    /// Outgoing, stored by the relay.
    Sent,
    /// Outgoing, the recipient's device confirmed it.
    Delivered,
    /// Incoming.
    Received,
    /// Outgoing, given up on.
    Failed,
}

impl MessageState {
    fn to_i64(self) -> i64 {
        match self {
            Self::Queued => 0,
            Self::Sent => 1,
            Self::Delivered => 2,
            Self::Received => 3,
            Self::Failed => 4,
        }
    }

    fn from_i64(v: i64) -> CoreResult<Self> {
        Ok(match v {
            0 => Self::Queued,
            1 => Self::Sent,
            2 => Self::Delivered,
            3 => Self::Received,
            4 => Self::Failed,
            _ => return Err(CoreError::Tampered { table: MESSAGES }),
        })
    }
}

/// What `put_message` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Insert {
    /// Stored.
    Stored,
    /// The same message was stored already; nothing changed.
    Duplicate,
    /// Another message has this id; nothing changed (a forgery, or a corrupt row).
    Conflict,
}

/// A fresh id for a message this device writes: random, and ordered by creation within
/// the process, so messages written in the same millisecond keep their order in the
/// history (which sorts by time, then id).
pub fn new_message_id() -> Uuid {
    Uuid::now_v7()
}

/// A message in the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Message id (the sender's id, shared by both sides).
    pub id: Uuid,
    /// The other party.
    pub peer: Uuid,
    /// Sent by this device.
    pub outgoing: bool,
    /// Text.
    pub body: String,
    /// When the sender sent it, Unix milliseconds.
    pub sent_at: i64,
    /// Current state.
    pub state: MessageState,
}

/// Position in a conversation's history: page with `messages(peer, Some(cursor), n)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryCursor {
    /// `sent_at` of the last message seen.
    pub sent_at: i64,
    /// Its id (orders messages with equal times).
    pub id: Uuid,
}

/// A conversation summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    /// The other party.
    pub peer: Uuid,
    /// Time of the latest message, Unix milliseconds.
    pub last_activity: i64,
}

impl Store {
    fn peer_hash(&self, peer: Uuid) -> [u8; 32] {
        self.keys().lookup("peer", peer.as_bytes())
    }

    /// Adds a message this device wrote and bumps its conversation. Its id is fresh
    /// (`new_message_id`), so it never meets a stored one; if it did, the stored message
    /// stays and this one is refused (`InvalidArgument`).
    pub fn save_message(&self, message: &StoredMessage) -> CoreResult<()> {
        match self.put_message(message)? {
            Insert::Stored => self.touch_conversation(message.peer, message.sent_at),
            Insert::Duplicate | Insert::Conflict => Err(CoreError::InvalidArgument(
                "a message with this id is already stored".into(),
            )),
        }
    }

    /// Adds a message without bumping its conversation (a batch bumps each conversation
    /// once, `touch_conversation`). A stored message is never replaced: message ids come
    /// from senders, and a peer who learned an id must not rewrite that message. What
    /// became of it is the answer.
    pub(crate) fn put_message(&self, message: &StoredMessage) -> CoreResult<Insert> {
        let peer_hash = self.peer_hash(message.peer);
        let plain = Writer::new()
            .bytes(message.peer.as_bytes())
            .bytes(message.body.as_bytes())
            .finish();
        let sealed = self.keys().seal(MESSAGES, message.id.as_bytes(), &plain);
        let inserted = self.exec(
            "INSERT INTO messages (id, peer_hash, sent_at, outgoing, state, sealed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO NOTHING",
            params![
                &message.id.as_bytes()[..],
                &peer_hash[..],
                message.sent_at,
                message.outgoing,
                message.state.to_i64(),
                sealed
            ],
        )?;
        if inserted > 0 {
            return Ok(Insert::Stored);
        }
        // Only the same message again (same peer, direction and text) is a harmless
        // duplicate; a stored row that does not open counts as a conflict, never as ours.
        let same = self
            .message(message.id)
            .ok()
            .flatten()
            .is_some_and(|stored| {
                stored.peer == message.peer
                    && stored.outgoing == message.outgoing
                    && stored.body == message.body
            });
        Ok(if same {
            Insert::Duplicate
        } else {
            Insert::Conflict
        })
    }

    /// Creates the conversation with `peer`, or moves its last activity up to `at`.
    pub(crate) fn touch_conversation(&self, peer: Uuid, at: i64) -> CoreResult<()> {
        let peer_hash = self.peer_hash(peer);
        let sealed = self.keys().seal(CONVERSATIONS, &peer_hash, peer.as_bytes());
        self.exec(
            "INSERT INTO conversations (peer_hash, last_activity, sealed) VALUES (?1, ?2, ?3)
             ON CONFLICT (peer_hash) DO UPDATE
             SET last_activity = MAX(last_activity, excluded.last_activity)",
            params![&peer_hash[..], at, sealed],
        )?;
        Ok(())
    }

    /// Changes a message's state; false if there is no such message.
    pub fn set_message_state(&self, id: Uuid, state: MessageState) -> CoreResult<bool> {
        // A receipt can overtake the relay's `sent` for the same message (they travel on
        // different paths): nothing moves a delivered message back (neither `sent` nor a
        // relay error). A state it already has is no change (and no event).
        let n = self.exec(
            "UPDATE messages SET state = ?2 WHERE id = ?1 AND state != ?2 AND state != ?3",
            params![
                &id.as_bytes()[..],
                state.to_i64(),
                MessageState::Delivered.to_i64()
            ],
        )?;
        Ok(n > 0)
    }

    /// One message by id.
    pub fn message(&self, id: Uuid) -> CoreResult<Option<StoredMessage>> {
        let row = self.query_opt(
            "SELECT id, peer_hash, sent_at, outgoing, state, sealed FROM messages WHERE id = ?1",
            [&id.as_bytes()[..]],
            |r| Ok(RawMessage::from_row(r)),
        )?;
        row.map(|r| r.and_then(|r| self.open_message(r)))
            .transpose()
    }

    /// Messages with `peer`, newest first, strictly before `before` when given.
    pub fn messages(
        &self,
        peer: Uuid,
        before: Option<HistoryCursor>,
        limit: usize,
    ) -> CoreResult<Vec<StoredMessage>> {
        let peer_hash = self.peer_hash(peer);
        let (sent_at, id) = match before {
            Some(c) => (c.sent_at, c.id.as_bytes().to_vec()),
            None => (i64::MAX, vec![0xFF; 17]),
        };
        let mut stmt = self.conn().prepare_cached(
            "SELECT id, peer_hash, sent_at, outgoing, state, sealed FROM messages
             WHERE peer_hash = ?1 AND (sent_at < ?2 OR (sent_at = ?2 AND id < ?3))
             ORDER BY sent_at DESC, id DESC LIMIT ?4",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![&peer_hash[..], sent_at, id, limit], |r| {
                Ok(RawMessage::from_row(r))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|r| r.and_then(|r| self.open_message(r)))
            .collect()
    }

    fn open_message(&self, raw: RawMessage) -> CoreResult<StoredMessage> {
        let id = Uuid::from_slice(&raw.id).map_err(|_| CoreError::Tampered { table: MESSAGES })?;
        let plain = self.keys().open(MESSAGES, &raw.id, &raw.sealed)?;
        let mut r = Reader::new(&plain, MESSAGES);
        let peer =
            Uuid::from_slice(r.bytes()?).map_err(|_| CoreError::Tampered { table: MESSAGES })?;
        let body = String::from_utf8(r.bytes()?.to_vec())
            .map_err(|_| CoreError::Tampered { table: MESSAGES })?;
        r.end()?;
        // The clear peer column is not authenticated; the sealed copy is.
        if self.peer_hash(peer)[..] != raw.peer_hash[..] {
            return Err(CoreError::Tampered { table: MESSAGES });
        }
        Ok(StoredMessage {
            id,
            peer,
            outgoing: raw.outgoing,
            body,
            sent_at: raw.sent_at,
            state: MessageState::from_i64(raw.state)?,
        })
    }

    /// Conversations, most recently active first.
    pub fn conversations(&self) -> CoreResult<Vec<Conversation>> {
        let mut stmt = self.conn().prepare_cached(
            "SELECT peer_hash, last_activity, sealed FROM conversations ORDER BY last_activity DESC",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|(hash, last_activity, sealed)| {
                let plain = self.keys().open(CONVERSATIONS, &hash, &sealed)?;
                let peer = Uuid::from_slice(&plain).map_err(|_| CoreError::Tampered {
                    table: CONVERSATIONS,
                })?;
                Ok(Conversation {
                    peer,
                    last_activity,
                })
            })
            .collect()
    }

    /// Records that relay message `server_id` was processed; false if it already was.
    pub fn mark_processed(&self, server_id: Uuid, now: i64) -> CoreResult<bool> {
        let n = self.exec(
            "INSERT INTO processed_messages (server_id, processed_at) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
            params![&server_id.as_bytes()[..], now],
        )?;
        Ok(n > 0)
    }

    /// True if relay message `server_id` was processed before.
    pub fn is_processed(&self, server_id: Uuid) -> CoreResult<bool> {
        let found: Option<i64> = self.query_opt(
            "SELECT 1 FROM processed_messages WHERE server_id = ?1",
            [&server_id.as_bytes()[..]],
            |r| r.get(0),
        )?;
        Ok(found.is_some())
    }

    /// Forgets processed ids older than `before` (the relay never redelivers that late).
    pub fn prune_processed(&self, before: i64) -> CoreResult<u64> {
        let n = self.exec(
            "DELETE FROM processed_messages WHERE processed_at < ?1",
            [before],
        )?;
        Ok(n as u64)
    }
}

struct RawMessage {
    id: Vec<u8>,
    peer_hash: Vec<u8>,
    sent_at: i64,
    outgoing: bool,
    state: i64,
    sealed: Vec<u8>,
}

impl RawMessage {
    fn from_row(r: &Row<'_>) -> CoreResult<Self> {
        Ok(Self {
            id: r.get(0)?,
            peer_hash: r.get(1)?,
            sent_at: r.get(2)?,
            outgoing: r.get(3)?,
            state: r.get(4)?,
            sealed: r.get(5)?,
        })
    }
}
