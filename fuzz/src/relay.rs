//! Targets for the relay's parsers of client input: REST bodies, WebSocket frames, access
//! tokens, and the signed strings of registration and login. Every client of the relay is
//! an outsider, so besides "no panic" each checks that a refusal is a 4xx with a bounded
//! message and that nothing invalid is accepted.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use libsignal_protocol::{IdentityKey, IdentityKeyPair, PrivateKey};
use privcomm_protocol::limits::{
    MAX_ONE_TIME_PREKEYS_PER_UPLOAD, MAX_PAYLOAD_BYTES, NONCE_LEN, REGISTRATION_LOCK_TOKEN_LEN,
    TOKEN_TTL_SECS,
};
use privcomm_protocol::rest::{
    ChallengeRequest, PreKeyUploadRequest, RegisterRequest, RegistrationLockRequest,
    SendMessageRequest, TokenRequest, VerificationRequest,
};
use privcomm_protocol::ws::ClientFrame;
use privcomm_protocol::{signing, ErrorCode, PhoneHash, PhoneNumber};
use privcomm_server::error::{ApiError, MAX_ERROR_MESSAGE_BYTES};
use privcomm_server::extract::decode_json;
use privcomm_server::keys::{parse_ec_public_key, verify_signature};
use privcomm_server::messaging::decode_payload;
use privcomm_server::pepper::Pepper;
use privcomm_server::routes::account::lock_token;
use privcomm_server::routes::keys::validate_upload;
use privcomm_server::routes::register;
use privcomm_server::tokens::{key_id, TokenIssuer, MAX_CLOCK_SKEW_SECS};
use privcomm_server::ws::connection::parse_frame;
use sha2::Sha256;
use uuid::Uuid;

/// The relay's clock in the token target.
pub const NOW: i64 = 1_800_000_000;
/// The relay's JWT secret in the token target.
pub const JWT_SECRET: &[u8] = b"fuzz-jwt-secret-fuzz-jwt-secret-0123";

/// Panics (a finding) unless `error` is a client error with a bounded message.
fn check_refusal(error: &ApiError) {
    assert!(
        error.message.len() <= MAX_ERROR_MESSAGE_BYTES,
        "error message of {} bytes",
        error.message.len()
    );
    let status = ApiError::status(error.code);
    assert!(
        status.is_client_error(),
        "input refused with {status}: {}",
        error.message
    );
}

/// The uploader's identity in the prekey-upload target: fixed, so seeds signed with it
/// (`examples/relay_seeds.rs`) stay valid from run to run.
pub fn identity() -> &'static IdentityKeyPair {
    static IDENTITY: OnceLock<IdentityKeyPair> = OnceLock::new();
    IDENTITY.get_or_init(|| {
        let Ok(private) = PrivateKey::deserialize(&[0x42; 32]) else {
            unreachable!("32 bytes are a Curve25519 private key");
        };
        let Ok(public) = private.public_key() else {
            unreachable!("a private key has a public key");
        };
        IdentityKeyPair::new(IdentityKey::new(public), private)
    })
}

/// The relay's pepper in the register target.
fn pepper() -> &'static Pepper {
    static PEPPER: OnceLock<Pepper> = OnceLock::new();
    PEPPER.get_or_init(|| Pepper::new(&[0x24; 32]))
}

/// The relay's token issuer in the token target (its secret is `JWT_SECRET`).
pub fn issuer() -> &'static TokenIssuer {
    static ISSUER: OnceLock<TokenIssuer> = OnceLock::new();
    ISSUER.get_or_init(|| TokenIssuer::new(JWT_SECRET, TOKEN_TTL_SECS))
}

/// A REST body: the first byte picks the endpoint, the rest is the body, decoded and
/// checked exactly as the route does before touching storage.
pub fn rest_body(data: &[u8]) {
    let [endpoint, body @ ..] = data else {
        return;
    };
    let result = match endpoint % 7 {
        0 => decode_json::<ChallengeRequest>(body)
            .and_then(|r| PhoneHash::parse(&r.phone_hash).map_err(ApiError::from))
            .map(drop),
        1 => decode_json::<TokenRequest>(body).and_then(|r| {
            PhoneHash::parse(&r.phone_hash)?;
            r.nonce.decode("nonce")?;
            r.signature.decode("signature")?;
            Ok(())
        }),
        2 => decode_json::<RegisterRequest>(body)
            .and_then(|r| register::validate(&r, pepper()))
            .map(|(phone_hash, user)| {
                assert_eq!(user.phone_key, pepper().phone_key(&phone_hash));
                assert_ne!(user.phone_key.as_str(), phone_hash.as_str());
                assert!(user.one_time_prekeys.len() <= MAX_ONE_TIME_PREKEYS_PER_UPLOAD);
                // An accepted identity key is one the token check can use later.
                assert!(parse_ec_public_key(&user.identity_key, "identity_key").is_ok());
            }),
        5 => decode_json::<VerificationRequest>(body).and_then(|r| {
            let number = PhoneNumber::parse(&r.number)
                .map_err(|e| ApiError::new(ErrorCode::InvalidPhoneNumber, e.to_string()))?;
            // An accepted number is E.164 and names a well-formed phone hash.
            assert_eq!(number.as_str(), r.number);
            assert!(PhoneHash::parse(number.hash().as_str()).is_ok());
            Ok(())
        }),
        6 => decode_json::<RegistrationLockRequest>(body)
            .and_then(|r| lock_token(&r.token))
            .map(|token| assert_eq!(token.len(), REGISTRATION_LOCK_TOKEN_LEN)),
        3 => decode_json::<PreKeyUploadRequest>(body)
            .and_then(|r| validate_upload(&r, identity().public_key()))
            .map(|update| {
                assert!(update.one_time_prekeys.len() <= MAX_ONE_TIME_PREKEYS_PER_UPLOAD);
            }),
        _ => decode_json::<SendMessageRequest>(body)
            .and_then(|r| decode_payload(&r.payload))
            .map(|payload| assert!((1..=MAX_PAYLOAD_BYTES).contains(&payload.len()))),
    };
    if let Err(e) = result {
        check_refusal(&e);
    }
}

/// A WebSocket text frame from a client (`ws::connection::parse_frame`): a frame that
/// re-encodes to itself, or a bounded 4xx refusal.
pub fn client_frame(data: &[u8]) {
    // The WebSocket layer hands over text frames only as valid UTF-8.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_frame(text) {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).unwrap_or_default();
            let reparsed: ClientFrame = parse_frame(&again).unwrap_or_else(|e| {
                panic!("a parsed frame does not re-parse: {e}");
            });
            assert_eq!(serde_json::to_string(&reparsed).unwrap_or_default(), again);
        }
        Err(e) => check_refusal(&e),
    }
}

/// `header.claims` signed with the relay's own secret, as a leaked-secret or buggy issuer
/// could: the checks after the signature must still hold.
fn sign(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(JWT_SECRET) else {
        unreachable!("HMAC takes any key length");
    };
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// The header fields an accepted token must have.
#[derive(serde::Deserialize)]
struct SignedHeader {
    alg: String,
    kid: Option<String>,
}

/// The claims an accepted token must have.
#[derive(serde::Deserialize)]
struct SignedClaims {
    sub: String,
    iat: i64,
    exp: i64,
}

/// True if a token with these claims must verify at `NOW`.
fn acceptable(iat: i64, exp: i64) -> bool {
    let ttl = i64::try_from(TOKEN_TTL_SECS).unwrap_or(i64::MAX);
    exp.checked_sub(iat).is_some_and(|l| l > 0 && l <= ttl)
        && iat <= NOW + MAX_CLOCK_SKEW_SECS
        && exp > NOW
}

/// An access token (`TokenIssuer::verify`). Mode 0: the bytes are the token, which must
/// never verify (no one but the relay can sign). Mode 1: fuzzed header and claims JSON,
/// signed with the relay's secret: an accepted token has HS256, our `kid`, a `sub` and a
/// lifetime within bounds. Mode 2: well-formed claims with fuzzed times, accepted exactly
/// when the times are within bounds.
pub fn access_token(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    match mode % 3 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            assert!(
                issuer().verify(&token, NOW).is_err(),
                "forged token accepted"
            );
        }
        1 => {
            let split = rest.iter().position(|b| *b == 0xff).unwrap_or(rest.len());
            let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or_default());
            let token = sign(header, claims);
            if let Ok(user) = issuer().verify(&token, NOW) {
                // Read into the fields that matter, as the relay does: fields it ignores
                // are skipped unvalidated (serde_json does not check the UTF-8 of an
                // ignored string), so a whole-document parse can refuse a token the relay
                // rightly takes.
                let Ok(header) = serde_json::from_slice::<SignedHeader>(header) else {
                    panic!("accepted a header that does not parse");
                };
                assert_eq!(header.alg, "HS256");
                assert_eq!(header.kid.as_deref(), Some(key_id(JWT_SECRET).as_str()));
                let Ok(claims) = serde_json::from_slice::<SignedClaims>(claims) else {
                    panic!("accepted claims that do not parse");
                };
                assert_eq!(claims.sub, user.to_string());
                let (iat, exp) = (claims.iat, claims.exp);
                assert!(acceptable(iat, exp), "accepted iat {iat} exp {exp}");
            }
        }
        _ => {
            let mut times = [0u8; 16];
            let n = rest.len().min(16);
            times[..n].copy_from_slice(&rest[..n]);
            let (a, b) = times.split_at(8);
            // Near NOW most of the time, anywhere sometimes.
            let wide = rest.get(16).is_some_and(|b| b & 1 == 1);
            let time = |bytes: &[u8]| {
                let v = i64::from_le_bytes(bytes.try_into().unwrap_or_default());
                if wide {
                    v
                } else {
                    NOW + (v % 10_000)
                }
            };
            let (iat, exp) = (time(a), time(b));
            let user = Uuid::from_u128(0x5eed);
            let header =
                serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": key_id(JWT_SECRET)});
            let claims = serde_json::json!({"sub": user, "iat": iat, "exp": exp});
            let token = sign(header.to_string().as_bytes(), claims.to_string().as_bytes());
            let verdict = issuer().verify(&token, NOW);
            assert_eq!(
                verdict.is_ok(),
                acceptable(iat, exp),
                "iat {iat} exp {exp}: {verdict:?}"
            );
        }
    }
}

/// The signed strings of login and registration (`signing::auth_message`,
/// `register_message`) and their check (`keys::verify_signature`). Over the inputs the
/// relay accepts (a 32-byte nonce, a valid phone hash) the strings are injective and a
/// login string never equals a registration string, so no signature serves for another
/// nonce, number or purpose; fuzzed keys and signatures never verify.
pub fn signed_string(data: &[u8]) {
    if data.len() < 2 * NONCE_LEN {
        return;
    }
    let (nonces, rest) = data.split_at(2 * NONCE_LEN);
    let (n1, n2) = nonces.split_at(NONCE_LEN);
    let text = String::from_utf8_lossy(rest);
    let (p1, p2) = text.split_once('|').unwrap_or((&text, ""));
    let (Ok(h1), Ok(h2)) = (PhoneHash::parse(p1), PhoneHash::parse(p2)) else {
        // Keys and signatures straight from the input: parse or refuse, never verify.
        let key = parse_ec_public_key(rest.get(..33).unwrap_or(rest), "identity_key");
        match key {
            Ok(key) => {
                let message = signing::auth_message(n1, p1);
                assert!(verify_signature(&key, &message, n2, "signature").is_err());
                let long = [n1, n2].concat();
                assert!(verify_signature(&key, &message, &long, "signature").is_err());
            }
            Err(e) => check_refusal(&e),
        }
        return;
    };
    let (h1, h2) = (h1.as_str(), h2.as_str());
    let same = n1 == n2 && h1 == h2;
    let auth1 = signing::auth_message(n1, h1);
    let auth2 = signing::auth_message(n2, h2);
    let reg1 = signing::register_message(n1, h1);
    let reg2 = signing::register_message(n2, h2);
    assert_eq!(auth1 == auth2, same);
    assert_eq!(reg1 == reg2, same);
    assert_ne!(auth1, reg2);
    assert_ne!(reg1, auth2);
    let pair = identity();
    let Ok(signature) = pair
        .private_key()
        .calculate_signature(&auth1, &mut rand::rng())
    else {
        panic!("signing failed");
    };
    let key = pair.public_key();
    assert!(verify_signature(key, &auth1, &signature, "signature").is_ok());
    assert_eq!(
        verify_signature(key, &auth2, &signature, "signature").is_ok(),
        same
    );
    assert!(verify_signature(key, &reg1, &signature, "signature").is_err());
}
