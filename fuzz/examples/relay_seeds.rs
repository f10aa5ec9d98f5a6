//! Writes the hand-made seeds of the relay targets into `fuzz/corpus/<target>/seed-*`: a
//! valid body per REST endpoint (signed by the targets' fixed identity), client frames,
//! tokens and signed-string inputs. Run `cargo run -p privcomm-fuzz --example relay_seeds`.

use libsignal_protocol::{
    kem, GenericSignedPreKey, KeyPair, KyberPreKeyId, KyberPreKeyRecord, SignedPreKeyId,
    SignedPreKeyRecord, Timestamp,
};
use privcomm_fuzz::relay::{identity, JWT_SECRET, NOW};
use privcomm_protocol::rest::{
    OneTimePreKey, PreKeyUploadRequest, RegisterRequest, SendMessageRequest, SignedPreKey,
};
use privcomm_protocol::{signing, Base64String};
use privcomm_server::tokens::{key_id, TokenIssuer};
use uuid::Uuid;

const PHONE_HASH: &str = "9a0364b9e99bb480dd25e1f0284c8555d5d7a8b8a3c1b1e1f0a1b2c3d4e5f601";

fn write(target: &str, name: &str, bytes: &[u8]) {
    privcomm_fuzz::write_seed(target, name, bytes);
}

fn json_seed(target: &str, name: &str, selector: u8, value: &impl serde::Serialize) {
    let body = serde_json::to_vec(value).expect("json");
    write(target, name, &[&[selector][..], &body].concat());
}

fn main() {
    let mut rng = rand::rng();
    let pair = identity();
    let signed_pair = KeyPair::generate(&mut rng);
    let signature = pair
        .private_key()
        .calculate_signature(&signed_pair.public_key.serialize(), &mut rng)
        .expect("sign");
    let signed = SignedPreKeyRecord::new(
        SignedPreKeyId::from(1u32),
        Timestamp::from_epoch_millis(1_700_000_000_000),
        &signed_pair,
        &signature,
    );
    let kyber = KyberPreKeyRecord::generate(
        kem::KeyType::Kyber1024,
        KyberPreKeyId::from(1u32),
        pair.private_key(),
    )
    .expect("kyber");
    let signed_body = SignedPreKey {
        key_id: 1,
        public_key: Base64String::encode(signed.public_key().expect("pk").serialize()),
        signature: Base64String::encode(signed.signature().expect("sig")),
    };
    let kyber_body = SignedPreKey {
        key_id: 1,
        public_key: Base64String::encode(kyber.public_key().expect("pk").serialize()),
        signature: Base64String::encode(kyber.signature().expect("sig")),
    };
    let one_time: Vec<OneTimePreKey> = (1..=2)
        .map(|id| OneTimePreKey {
            key_id: id,
            public_key: Base64String::encode(KeyPair::generate(&mut rng).public_key.serialize()),
        })
        .collect();
    let nonce = [7u8; 32];
    json_seed(
        "rest_body",
        "challenge",
        0,
        &serde_json::json!({ "phone_hash": PHONE_HASH }),
    );
    json_seed(
        "rest_body",
        "token",
        1,
        &serde_json::json!({
            "phone_hash": PHONE_HASH,
            "nonce": Base64String::encode(nonce),
            "signature": Base64String::encode([1u8; 64]),
        }),
    );
    let register_signature = pair
        .private_key()
        .calculate_signature(&signing::register_message(&nonce, PHONE_HASH), &mut rng)
        .expect("sign");
    json_seed(
        "rest_body",
        "register",
        2,
        &RegisterRequest {
            phone_hash: PHONE_HASH.to_owned(),
            registration_id: 1234,
            identity_key: Base64String::encode(pair.identity_key().serialize()),
            nonce: Base64String::encode(nonce),
            signature: Base64String::encode(register_signature),
            signed_prekey: signed_body.clone(),
            kyber_prekey: kyber_body.clone(),
            one_time_prekeys: one_time.clone(),
            verification_code: "123456".into(),
            verification_session: "00112233445566778899aabbccddeeff".into(),
            registration_lock: None,
        },
    );
    json_seed(
        "rest_body",
        "upload",
        3,
        &PreKeyUploadRequest {
            signed_prekey: Some(signed_body),
            kyber_prekey: Some(kyber_body),
            one_time_prekeys: one_time,
        },
    );
    let id = Uuid::from_u128(0x0190_a000_0000_7000_8000_0000_0000_0001);
    json_seed(
        "rest_body",
        "verification",
        5,
        &serde_json::json!({ "number": "+14155550123", "locale": "en" }),
    );
    json_seed(
        "rest_body",
        "registration_lock",
        6,
        &serde_json::json!({ "token": Base64String::encode([7u8; 32]) }),
    );
    json_seed(
        "rest_body",
        "send",
        4,
        &SendMessageRequest {
            to: id,
            id,
            payload: Base64String::encode(b"opaque ciphertext"),
            registration_id: Some(4711),
        },
    );

    for (name, frame) in [
        (
            "send",
            format!(r#"{{"type":"send","to":"{id}","id":"{id}","payload":"AAEC"}}"#),
        ),
        ("ack", format!(r#"{{"type":"ack","id":"{id}"}}"#)),
        ("unknown", r#"{"type":"typing","to":"x"}"#.to_owned()),
        ("bad-field", r#"{"type":"ack","id":12}"#.to_owned()),
    ] {
        write("client_frame", name, frame.as_bytes());
    }

    // Mode 0: someone else's token; mode 1: header and claims; mode 2: times.
    let foreign = TokenIssuer::new(&[9u8; 32], 1800)
        .issue(id, NOW)
        .expect("token");
    write(
        "access_token",
        "foreign",
        &[&[0u8][..], foreign.as_bytes()].concat(),
    );
    let header = serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": key_id(JWT_SECRET)});
    let claims = serde_json::json!({"sub": id, "iat": NOW, "exp": NOW + 1800});
    write(
        "access_token",
        "claims",
        &[
            &[1u8][..],
            header.to_string().as_bytes(),
            &[0xff],
            claims.to_string().as_bytes(),
        ]
        .concat(),
    );
    let mut times = vec![2u8];
    times.extend_from_slice(&0i64.to_le_bytes());
    times.extend_from_slice(&1800i64.to_le_bytes());
    write("access_token", "times", &times);

    let other = PHONE_HASH.replace('9', "8");
    for (name, n2, h2) in [
        ("same", [7u8; 32], PHONE_HASH),
        ("other-nonce", [8u8; 32], PHONE_HASH),
        ("other-hash", [7u8; 32], other.as_str()),
    ] {
        let input = [&nonce[..], &n2, format!("{PHONE_HASH}|{h2}").as_bytes()].concat();
        write("signed_string", name, &input);
    }
    let mut key = vec![7u8; 64];
    key.extend_from_slice(&pair.public_key().serialize());
    write("signed_string", "key", &key);
}
