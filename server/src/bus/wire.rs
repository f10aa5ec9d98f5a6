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

/// The holder named by a presence key's value: `<stamp> <holder>` (the claim scripts in
/// `redis.rs` write it; stamps order the claims of one user).
pub fn holder_of_presence(value: &str) -> &str {
    value.split_once(' ').map_or(value, |(_, holder)| holder)
}

/// One event on a user's channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A message was stored at `seq`.
    Stored(i64),
    /// The user connected at this holder, with this claim stamp; a connection elsewhere
    /// closes if its own claim is older (a late event of an older claim closes nothing).
    Claimed(String, u64),
    /// The connection before has ended and its writes are committed; for this holder.
    Released(String),
    /// Registered on a new device: connections of this registration generation or older
    /// close (a connection of the new device, if one came first, stays).
    Displaced(u32),
}

/// Longest event accepted.
const MAX_EVENT: usize = 160;

impl Event {
    /// The text sent.
    pub fn encode(&self) -> String {
        match self {
            Self::Stored(seq) => format!("s {seq}"),
            Self::Claimed(holder, stamp) => format!("c {holder} {stamp}"),
            Self::Released(holder) => format!("r {holder}"),
            Self::Displaced(generation) => format!("d {generation}"),
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
            "c" => {
                let (holder, stamp) = rest.split_once(' ')?;
                (!holder.is_empty()).then_some(())?;
                Some(Self::Claimed(holder.to_owned(), stamp.parse().ok()?))
            }
            "r" if !rest.is_empty() => Some(Self::Released(rest.to_owned())),
            "d" => rest.parse().ok().map(Self::Displaced),
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
            Event::Claimed("a-1/7".into(), 1_733_456_789_123_456),
            Event::Released("b/9".into()),
            Event::Displaced(3),
        ] {
            assert_eq!(Event::decode(event.encode().as_bytes()), Some(event));
        }
        let junk = [
            "", "s", "s x", "c", "c a/1", "c a/1 x", "c  5", "d", "d x", "q 1",
        ];
        for junk in junk.into_iter().chain([&*"s ".repeat(100)]) {
            assert_eq!(Event::decode(junk.as_bytes()), None, "{junk:?}");
        }
        let user = Uuid::new_v4();
        assert_eq!(user_of_channel(channel(user).as_bytes()), Some(user));
        assert_eq!(user_of_channel(b"privcomm:{nope}"), None);
        assert_eq!(instance_of(&holder("relay-a", 3)), "relay-a");
        assert_eq!(holder_of_presence("17 relay-a/3"), "relay-a/3");
    }
}
