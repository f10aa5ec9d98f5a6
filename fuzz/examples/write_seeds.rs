//! Writes the hand-made seed inputs of every target into `fuzz/corpus/<target>/seed-*`:
//! one well-formed input per shape a parser knows, so fuzzing starts from valid inputs.
//! Run `cargo run -p privcomm-fuzz --example write_seeds`; the fuzzed corpus grows from
//! these (README.md).

use privcomm_core::call::signal::CallSignal;
use privcomm_core::call::EndReason;
use privcomm_core::client::envelope::Envelope;
use privcomm_core::client::padding::pad;
use privcomm_core::{MemorySecretStore, SignalEngine};
use privcomm_fuzz::fixtures::{bundle_of, store_template, with_engine, work_dir, ALICE, BOB};
use privcomm_protocol::PhoneHash;
use uuid::Uuid;

const SDP: &str = "v=0\r\no=- 4215775240449105457 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
c=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\n\
a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 6B:8B:5D:EA:59:04:20:23:29:C8:87:1C:CC:87:32:BE:DD:8C:66:A5:8E:50:55:EA:8C:D3:B6:5C:09:5E:D6:BC\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host\r\na=end-of-candidates\r\n";

fn write(target: &str, name: &str, bytes: &[u8]) {
    privcomm_fuzz::write_seed(target, name, bytes);
}

fn with_prefix(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    [prefix, rest].concat()
}

fn main() {
    let id = "0190a000-0000-7000-8000-000000000001";
    let frames = [
        (
            "message",
            format!(
                r#"{{"type":"encrypted_message","id":"{id}","sender":"{id}","payload":"AAEC","timestamp":1700000000000}}"#
            ),
        ),
        (
            "sent",
            format!(r#"{{"type":"sent","id":"{id}","server_id":"{id}"}}"#),
        ),
        ("queue-empty", r#"{"type":"queue_empty"}"#.to_owned()),
        (
            "error",
            format!(
                r#"{{"type":"error","code":"rate_limited","message":"slow down","id":"{id}"}}"#
            ),
        ),
    ];
    for (name, json) in &frames {
        write("relay_frame", name, json.as_bytes());
    }

    let alice_secrets = MemorySecretStore::new();
    let path = work_dir().join("seed-alice.db");
    let _ = std::fs::remove_file(&path);
    let mut alice = SignalEngine::open(&path, &alice_secrets).expect("open");
    let hash = PhoneHash::parse(&"a".repeat(64)).expect("hash");
    alice.create_account(&hash, 2).expect("account");
    alice.set_user_id(ALICE).expect("user id");
    let bundle = serde_json::to_vec(&bundle_of(&alice, ALICE)).expect("bundle");
    let answers: [(&str, u8, u8, Vec<u8>); 9] = [
        ("health", 0, 0, br#"{"status":"ok","database":"ok"}"#.to_vec()),
        ("challenge", 1, 0, br#"{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","expires_in":300}"#.to_vec()),
        ("register", 2, 0, format!(r#"{{"status":"registered","user_id":"{id}"}}"#).into_bytes()),
        ("token", 3, 0, format!(r#"{{"token":"e30.e30.sig","expires_in":3600,"user_id":"{id}"}}"#).into_bytes()),
        ("bundle", 4, 0, bundle),
        ("count", 5, 0, br#"{"one_time_prekeys":42}"#.to_vec()),
        ("send", 6, 0, format!(r#"{{"id":"{id}"}}"#).into_bytes()),
        ("turn", 7, 0, br#"{"urls":["turn:turn.example.org:3478?transport=udp"],"username":"1700000000:u","credential":"c2VjcmV0","ttl":86400}"#.to_vec()),
        ("error", 3, 200, br#"{"error":"rate_limited","message":"too many requests"}"#.to_vec()),
    ];
    for (name, endpoint, status, body) in &answers {
        write(
            "rest_answer",
            name,
            &with_prefix(&[*endpoint, *status], body),
        );
    }

    // Ciphertexts for this process's "Bob": the shapes of a PreKey and a Signal message.
    let bob_bundle = with_engine(|bob| bundle_of(bob, BOB));
    alice.process_bundle(BOB, &bob_bundle).expect("session");
    let first = alice.encrypt(BOB, &pad(b"{}")).expect("encrypt");
    write("ciphertext", "prekey-message", &first);
    let mut whisper = first.clone();
    if let Some(kind) = whisper.first_mut() {
        *kind = 2;
    }
    write("ciphertext", "signal-message-type", &whisper);

    let call = Uuid::from_u128(7);
    let envelopes = [
        (
            "text",
            Envelope::Text {
                id: Uuid::from_u128(1),
                body: "hello".into(),
                sent_at: 1_700_000_000_000,
            },
        ),
        (
            "receipt",
            Envelope::Receipt {
                ids: vec![Uuid::from_u128(1), Uuid::from_u128(2)],
            },
        ),
        (
            "offer",
            Envelope::Call {
                call_id: call,
                signal: CallSignal::Offer { sdp: SDP.into() },
                sent_at: 1,
            },
        ),
        (
            "candidate",
            Envelope::Call {
                call_id: call,
                signal: CallSignal::Candidate {
                    candidate: "candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host".into(),
                    sdp_mid: Some("0".into()),
                    sdp_mline_index: Some(0),
                },
                sent_at: 1,
            },
        ),
        (
            "hangup",
            Envelope::Call {
                call_id: call,
                signal: CallSignal::Hangup {
                    reason: EndReason::HungUp,
                },
                sent_at: 1,
            },
        ),
        (
            "busy",
            Envelope::Call {
                call_id: call,
                signal: CallSignal::Busy,
                sent_at: 1,
            },
        ),
    ];
    for (name, envelope) in &envelopes {
        write("envelope", name, &pad(&envelope.encode()));
    }

    write("padding", "short", &pad(b"hello"));
    write("padding", "long", &pad(&[b'x'; 300]));
    write("padding", "unpadded", b"hello");

    write("peer_sdp", "offer", &with_prefix(&[0], SDP.as_bytes()));
    write("peer_sdp", "answer", &with_prefix(&[2], SDP.as_bytes()));
    write(
        "peer_sdp",
        "candidate",
        b"\x01candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host",
    );
    write(
        "peer_sdp",
        "relay-candidate",
        b"\x01candidate:3 1 udp 16777215 203.0.113.5 3478 typ relay raddr 0.0.0.0 rport 0",
    );

    // Store edits: none; a sealed value moved between rows; a column set; a row deleted.
    let template = store_template();
    let table = |name: &str| {
        let t = template
            .tables
            .iter()
            .position(|(n, _)| n == name)
            .expect("table");
        let columns = &template.tables[t].1;
        let sealed = columns.iter().position(|c| c == "sealed").unwrap_or(0);
        (
            u8::try_from(t).unwrap_or(0),
            u8::try_from(sealed).unwrap_or(0),
        )
    };
    let (messages, sealed) = table("messages");
    let (sessions, session_sealed) = table("sessions");
    // Fewer than 4 bytes: no edit (libFuzzer does not count empty files).
    write("tampered_store", "untouched", b"no");
    write(
        "tampered_store",
        "moved-message",
        &[4, messages, sealed, 0, messages, sealed, 1],
    );
    write(
        "tampered_store",
        "session-from-message",
        &[4, sessions, session_sealed, 0, messages, sealed, 0],
    );
    write(
        "tampered_store",
        "state",
        &with_prefix(&[2, messages, 4, 0], &99i64.to_le_bytes()),
    );
    write("tampered_store", "deleted-row", &[5, sessions, 0, 0]);
    write(
        "tampered_store",
        "truncated-seal",
        &[0, messages, sealed, 1, 3, 1, 2, 3],
    );

    for (name, text) in [
        ("uuid", "0190a000-0000-7000-8000-000000000001"),
        ("uuid-braced", "{0190a000-0000-7000-8000-000000000001}"),
        ("uuid-simple", "0190a00000007000800000000000000"),
        ("phone", "+49 30 1234-5678"),
        ("phone-us", "+1 (415) 555-0123"),
    ] {
        write("app_input", name, text.as_bytes());
    }
    println!("seeds written to {}/corpus", env!("CARGO_MANIFEST_DIR"));
}
