//! The bus's messages on the wire: short text, ids only. Anything malformed is ignored (the
//! bus is trusted, but a parse failure must not take an instance down).

use uuid::Uuid;

/// Who holds a user's connection: `<instance id>/<connection number>`.
pub fn holder(instance: &str, conn: u64) -> String {
    format!("{instance}/{conn}")
}

/// The instance part of a holder.
pub fn instance_of(holder: &str) -> &str {
    holder
        .rsplit_once('/')
        .map_or(holder, |(instance, _)| instance)
}

/// The Redis channel of `user`'s events. The braces make it a hash tag: the channel and
/// the presence key hash to one slot.
pub fn channel(user: Uuid) -> String {
    format!("privcomm:{{{user}}}")
}

/// The key naming the connection that holds `user` now.
pub fn presence_key(user: Uuid) -> String {
    format!("privcomm:{{{user}}}:at")
}

/// The user a channel belongs to.
pub fn user_of_channel(channel: &[u8]) -> Option<Uuid> {
    let text = std::str::from_utf8(channel).ok()?;
    let inner = text.strip_prefix("privcomm:{")?.strip_suffix('}')?;
    Uuid::parse_str(inner).ok()
}

/// One event on a user's channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message was stored at `seq`.
    Stored(i64),
    /// The user connected at this holder; others close their connection.
    Claimed(String),
    /// The connection before has ended and its writes are committed; for this holder.
    Released(String),
    /// Registered on a new device: every connection closes.
    Displaced,
}

/// Longest event accepted.
const MAX_EVENT: usize = 160;

impl Event {
    /// The text sent.
    pub fn encode(&self) -> String {
        match self {
            Self::Stored(seq) => format!("s {seq}"),
            Self::Claimed(holder) => format!("c {holder}"),
            Self::Released(holder) => format!("r {holder}"),
            Self::Displaced => "d".to_owned(),
        }
    }

    /// Parses an event; `None` if malformed.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_EVENT {
            return None;
        }
        let text = std::str::from_utf8(bytes).ok()?;
        let (kind, rest) = text.split_once(' ').unwrap_or((text, ""));
        match kind {
            "s" => rest.parse().ok().map(Self::Stored),
            "c" if !rest.is_empty() => Some(Self::Claimed(rest.to_owned())),
            "r" if !rest.is_empty() => Some(Self::Released(rest.to_owned())),
            "d" if rest.is_empty() => Some(Self::Displaced),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_junk_is_ignored() {
        for event in [
            Event::Stored(42),
            Event::Claimed("a-1/7".into()),
            Event::Released("b/9".into()),
            Event::Displaced,
        ] {
            assert_eq!(Event::decode(event.encode().as_bytes()), Some(event));
        }
        for junk in ["", "s", "s x", "c", "d x", "q 1", &"s ".repeat(100)] {
            assert_eq!(Event::decode(junk.as_bytes()), None, "{junk:?}");
        }
        let user = Uuid::new_v4();
        assert_eq!(user_of_channel(channel(user).as_bytes()), Some(user));
        assert_eq!(user_of_channel(b"privcomm:{nope}"), None);
        assert_eq!(instance_of(&holder("relay-a", 3)), "relay-a");
    }
}
