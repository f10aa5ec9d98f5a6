//! The targets: one function per parser of untrusted input, each fed raw fuzzer bytes.

use privcomm_core::call::signal::{remote_description, SdpRole};
use privcomm_core::client::envelope::Envelope;
use privcomm_core::client::{padding, phone};
use privcomm_core::engine::peer_address;
use privcomm_core::net::rest::{decode_answer, relay_error};
use privcomm_core::net::ws::{parse_frame, SocketEvent};
use privcomm_core::{CoreResult, SignalEngine};
use privcomm_protocol::rest::{
    ChallengeResponse, HealthResponse, PreKeyBundleResponse, PreKeyCountResponse, RegisterResponse,
    SendMessageResponse, TokenResponse, TurnCredentialsResponse,
};
use privcomm_protocol::ws::ServerFrame;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::check_error;
use crate::fixtures::{self, ALICE, ALICE_PHONE_HASH, BODIES};

/// Checks `result`'s error (if any) and hands back its value.
fn checked<T>(result: CoreResult<T>) -> Option<T> {
    result.map_err(|e| check_error(&e)).ok()
}

/// A text frame from the relay (`net::ws::parse_frame`): a frame or a short reason, an
/// `error` frame's text bounded, and every frame re-encodes to itself.
pub fn relay_frame(data: &[u8]) {
    // The WebSocket layer hands over text frames only as valid UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_frame(text) {
        SocketEvent::Frame(frame) => {
            if let ServerFrame::Error { message, .. } = &frame {
                assert!(message.len() <= privcomm_core::error::MAX_UNTRUSTED_TEXT_BYTES);
            }
            let again = serde_json::to_string(&frame).unwrap_or_default();
            assert_eq!(parse_frame(&again), SocketEvent::Frame(frame));
        }
        SocketEvent::Malformed(reason) => assert!(reason.len() <= 100, "{reason}"),
        other => panic!("a text frame read as {other:?}"),
    }
}

/// A REST answer (`net::rest::decode_answer`): the first byte picks the endpoint, the
/// second the HTTP status, the rest is the body. A prekey bundle that parses goes on
/// through the key parsing and signature checks of `SignalEngine::process_bundle`.
pub fn rest_answer(data: &[u8]) {
    let [endpoint, status, body @ ..] = data else {
        return;
    };
    let status = match status {
        0..=159 => 200,
        160..=223 => 400 + u16::from(status % 32),
        _ => 500 + u16::from(status % 8),
    };
    match endpoint % 8 {
        0 => drop(answer::<HealthResponse>(status, body)),
        1 => {
            if let Some(challenge) = answer::<ChallengeResponse>(status, body) {
                let _ = challenge.nonce.decode("nonce");
            }
        }
        2 => drop(answer::<RegisterResponse>(status, body)),
        3 => drop(answer::<TokenResponse>(status, body)),
        4 => {
            if let Some(bundle) = answer::<PreKeyBundleResponse>(status, body) {
                let peer = Uuid::from_u128(0x5eed);
                fixtures::with_engine(|engine| {
                    if checked(engine.process_bundle(peer, &bundle)).is_some() {
                        // A bundle that was accepted starts a usable session.
                        assert!(checked(engine.encrypt(peer, b"x")).is_some());
                    }
                });
            }
        }
        5 => drop(answer::<PreKeyCountResponse>(status, body)),
        6 => drop(answer::<SendMessageResponse>(status, body)),
        _ => drop(answer::<TurnCredentialsResponse>(status, body)),
    }
    check_error(&relay_error(status, body));
}

fn answer<T: DeserializeOwned>(status: u16, body: &[u8]) -> Option<T> {
    let value = checked(decode_answer::<T>(status, body));
    assert!(value.is_none() || (200..300).contains(&status));
    value
}

/// A relay payload claiming to be from Alice (`SignalEngine::decrypt`): its type byte and
/// libsignal's parsing of PreKey and Signal messages. Without Alice's keys nothing decrypts.
pub fn ciphertext(data: &[u8]) {
    fixtures::with_engine(
        |engine: &mut SignalEngine| match engine.decrypt(ALICE, data) {
            Ok(plain) => panic!("{} bytes decrypted without a session", plain.len()),
            Err(e) => check_error(&e),
        },
    );
}

/// A decrypted payload (`Envelope::open`): padding, JSON and bounds. What opens is what an
/// honest sender would have produced.
pub fn envelope(data: &[u8]) {
    let Some(opened) = checked(Envelope::open(data)) else {
        return;
    };
    let resent = padding::pad(&opened.encode());
    assert_eq!(Envelope::open(&resent).ok().as_ref(), Some(&opened));
    if let Envelope::Call { signal, .. } = &opened {
        let _ = checked(signal.validate());
    }
}

/// Padding (`padding::unpad`): only what `pad` makes is accepted, and `pad` undoes it.
pub fn padding(data: &[u8]) {
    if let Some(inner) = checked(padding::unpad(data)) {
        assert_eq!(padding::pad(inner).as_slice(), data);
    }
    let padded = padding::pad(data);
    assert_eq!(padded.len(), padding::padded_len(data.len() + 1));
    assert_eq!(padding::unpad(&padded).ok(), Some(data));
}

/// A peer's SDP and ICE candidate, as the call hands them to webrtc
/// (`call::signal::remote_description`, webrtc's candidate parser).
pub fn peer_sdp(data: &[u8]) {
    let Some((&role, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest).into_owned();
    if role & 1 == 0 {
        let role = if role & 2 == 0 {
            SdpRole::Offer
        } else {
            SdpRole::Answer
        };
        let _ = checked(remote_description(role, text));
    } else {
        let _ = rtc::ice::candidate::unmarshal_candidate(&text);
    }
}

/// Ids and phone numbers an app passes through the FFI (`parse_id`, `phone::normalize`):
/// a typed error or a canonical value that parses to itself.
pub fn app_input(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match privcomm_ffi::parse_id("peer id", &text) {
        Ok(id) => assert_eq!(
            privcomm_ffi::parse_id("peer id", &id.to_string()).ok(),
            Some(id)
        ),
        Err(e) => assert!(e.to_string().len() <= crate::MAX_ERROR_TEXT_BYTES),
    }
    if let Some(number) = checked(phone::normalize(&text)) {
        assert_eq!(
            phone::normalize(&number).ok().as_deref(),
            Some(number.as_str())
        );
        let hash = phone::phone_hash(&text).ok().unwrap_or_default();
        assert!(privcomm_protocol::PhoneHash::parse(&hash).is_ok());
    }
}

/// A database file someone changed without the key: the input is a list of edits to the
/// fixture store's rows (`fixtures::store_template`), which is then opened and read in
/// full. Every read is a value or a typed error, and no text, peer or contact that was
/// not stored can be read back: sealed contents stay authentic whatever is moved.
pub fn tampered_store(data: &[u8]) {
    let template = fixtures::store_template();
    let path = fixtures::work_dir().join("tampered.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if std::fs::write(&path, &template.bytes).is_err() {
        return;
    }
    if let Ok(conn) = rusqlite::Connection::open(&path) {
        for edit in edits(data) {
            // An edit the schema refuses (a constraint) is simply not made.
            let _ = edit.apply(&conn, &template.tables);
        }
    }
    let Some(mut engine) = checked(SignalEngine::open(&path, &template.secrets)) else {
        return;
    };
    read_everything(&mut engine);
}

fn read_everything(engine: &mut SignalEngine) {
    let _ = checked(engine.user_id());
    let _ = checked(engine.phone_hash());
    let _ = checked(engine.held_one_time_prekeys());
    let _ = checked(engine.current_signed_prekey());
    let _ = checked(engine.current_kyber_prekey());
    let _ = checked(engine.has_session(ALICE));
    let store = engine.store();
    for message in checked(store.messages(ALICE, None, 100)).unwrap_or_default() {
        assert!(BODIES.contains(&message.body.as_str()));
        assert_eq!(message.peer, ALICE);
    }
    for id in 0..4u128 {
        if let Some(Some(message)) = checked(store.message(Uuid::from_u128(0x1000 + id))) {
            assert!(BODIES.contains(&message.body.as_str()));
        }
    }
    for conversation in checked(store.conversations()).unwrap_or_default() {
        assert_eq!(conversation.peer, ALICE);
    }
    for entry in checked(store.outbox(100)).unwrap_or_default() {
        assert_eq!(entry.peer, ALICE);
    }
    if let Some(Some(hash)) = checked(store.contact_phone_hash(ALICE)) {
        assert_eq!(hash, ALICE_PHONE_HASH);
    }
    if let Some(Some(peer)) = checked(store.contact_by_phone_hash(ALICE_PHONE_HASH)) {
        assert_eq!(peer, ALICE);
    }
    let _ = checked(store.peer_identity(&peer_address(ALICE)));
    let _ = checked(store.session(&peer_address(ALICE)));
    let _ = checked(store.blocked_peers());
    let _ = checked(store.dropped_counts());
    let _ = checked(store.usage());
    let _ = checked(store.outbox_len());
    let _ = checked(store.one_time_prekey_count());
    let _ = checked(store.is_processed(Uuid::from_u128(0x3000)));
    // Decrypting through a tampered session must refuse, not panic.
    if let Err(e) = engine.decrypt(ALICE, &[3, 1, 2, 3]) {
        check_error(&e);
    }
    let _ = checked(engine.encrypt(ALICE, b"after tampering"));
}

/// One change to one row.
enum Edit {
    /// Sets a column to bytes, text, an integer or NULL.
    Set {
        table: u8,
        column: u8,
        row: u8,
        value: rusqlite::types::Value,
    },
    /// Copies a value from another row (of any table): a sealed value moved elsewhere.
    Copy {
        table: u8,
        column: u8,
        row: u8,
        from: (u8, u8, u8),
    },
    /// Deletes a row.
    Delete { table: u8, row: u8 },
}

/// Reads up to 8 edits: 4 header bytes (kind, table, column, row), then the kind's data.
fn edits(mut data: &[u8]) -> Vec<Edit> {
    use rusqlite::types::Value;
    let mut out = Vec::new();
    while out.len() < 8 {
        let [kind, table, column, row, rest @ ..] = data else {
            break;
        };
        let (table, column, row) = (*table, *column, *row);
        data = rest;
        let edit = match kind % 6 {
            0 | 1 => {
                let Some((&len, rest)) = data.split_first() else {
                    break;
                };
                let len = usize::from(len).min(rest.len());
                let (bytes, rest) = rest.split_at(len);
                data = rest;
                let value = if kind % 6 == 0 {
                    Value::Blob(bytes.to_vec())
                } else {
                    Value::Text(String::from_utf8_lossy(bytes).into_owned())
                };
                Edit::Set {
                    table,
                    column,
                    row,
                    value,
                }
            }
            2 => {
                let Some((int, rest)) = data.split_first_chunk::<8>() else {
                    break;
                };
                data = rest;
                Edit::Set {
                    table,
                    column,
                    row,
                    value: Value::Integer(i64::from_le_bytes(*int)),
                }
            }
            3 => Edit::Set {
                table,
                column,
                row,
                value: Value::Null,
            },
            4 => {
                let [t, c, r, rest @ ..] = data else {
                    break;
                };
                let from = (*t, *c, *r);
                data = rest;
                Edit::Copy {
                    table,
                    column,
                    row,
                    from,
                }
            }
            _ => Edit::Delete { table, row },
        };
        out.push(edit);
    }
    out
}

type Tables = [(String, Vec<String>)];

fn pick<T>(items: &[T], index: u8) -> Option<&T> {
    (!items.is_empty()).then(|| &items[usize::from(index) % items.len()])
}

/// The values of row `row` (modulo the row count) of `table`, to find it again.
fn row_values(
    conn: &rusqlite::Connection,
    table: &str,
    columns: &[String],
    row: u8,
) -> rusqlite::Result<Option<Vec<rusqlite::types::Value>>> {
    let count: i64 = conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
        r.get(0)
    })?;
    if count == 0 {
        return Ok(None);
    }
    let offset = i64::from(row) % count;
    let list = columns
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    conn.query_row(
        &format!("SELECT {list} FROM \"{table}\" LIMIT 1 OFFSET ?1"),
        [offset],
        |r| (0..columns.len()).map(|i| r.get(i)).collect(),
    )
    .map(Some)
}

/// `col1 IS ?first AND col2 IS ?(first + 1) …`: the row with exactly these values.
fn matching(columns: &[String], first: usize) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("\"{c}\" IS ?{}", i + first))
        .collect::<Vec<_>>()
        .join(" AND ")
}

impl Edit {
    fn apply(&self, conn: &rusqlite::Connection, tables: &Tables) -> rusqlite::Result<()> {
        use rusqlite::params_from_iter;
        let (table, column, row, value) = match self {
            Self::Delete { table, row } => {
                let Some((name, columns)) = pick(tables, *table) else {
                    return Ok(());
                };
                let Some(values) = row_values(conn, name, columns, *row)? else {
                    return Ok(());
                };
                let sql = format!("DELETE FROM \"{name}\" WHERE {}", matching(columns, 1));
                conn.execute(&sql, params_from_iter(values))?;
                return Ok(());
            }
            Self::Set {
                table,
                column,
                row,
                value,
            } => (*table, *column, *row, value.clone()),
            Self::Copy {
                table,
                column,
                row,
                from: (t, c, r),
            } => {
                let Some((name, columns)) = pick(tables, *t) else {
                    return Ok(());
                };
                let Some(values) = row_values(conn, name, columns, *r)? else {
                    return Ok(());
                };
                let Some(value) = pick(&values, *c) else {
                    return Ok(());
                };
                (*table, *column, *row, value.clone())
            }
        };
        let Some((name, columns)) = pick(tables, table) else {
            return Ok(());
        };
        let Some(target) = pick(columns, column) else {
            return Ok(());
        };
        let Some(values) = row_values(conn, name, columns, row)? else {
            return Ok(());
        };
        let sql = format!(
            "UPDATE \"{name}\" SET \"{target}\" = ?1 WHERE {}",
            matching(columns, 2)
        );
        conn.execute(&sql, params_from_iter(std::iter::once(value).chain(values)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use privcomm_core::CoreError;

    #[test]
    fn an_untouched_store_reads_in_full() {
        let template = fixtures::store_template();
        assert!(template.tables.len() >= 10, "{:?}", template.tables);
        let path = fixtures::work_dir().join("untouched.db");
        std::fs::write(&path, &template.bytes).unwrap();
        let engine = SignalEngine::open(&path, &template.secrets).unwrap();
        let messages = engine.store().messages(ALICE, None, 100).unwrap();
        assert_eq!(messages.len(), BODIES.len());
        assert_eq!(engine.store().outbox(10).unwrap().len(), 1);
        assert!(engine.has_session(ALICE).unwrap());
    }

    #[test]
    fn a_moved_sealed_value_is_refused() {
        // Copy the sealed value of one message row onto another (kind 4: copy), then read.
        let template = fixtures::store_template();
        let (t, _) = template
            .tables
            .iter()
            .enumerate()
            .find(|(_, (name, _))| name == "messages")
            .unwrap();
        let columns = &template.tables[t].1;
        let sealed = columns.iter().position(|c| c == "sealed").unwrap();
        let (t, c) = (u8::try_from(t).unwrap(), u8::try_from(sealed).unwrap());
        tampered_store(&[4, t, c, 0, t, c, 1]);
        let path = fixtures::work_dir().join("tampered.db");
        let engine = SignalEngine::open(&path, &template.secrets).unwrap();
        assert!(matches!(
            engine.store().messages(ALICE, None, 100),
            Err(CoreError::Tampered { .. })
        ));
    }
}
