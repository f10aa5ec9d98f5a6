//! The pepper: a secret kept outside the database that keys what the relay stores about
//! phone numbers and the messages it stored, so a copy of the database alone gives away neither.
//!
//! A phone hash is an unsalted SHA-256 of a phone number, and phone numbers are few enough
//! to try them all: from a stolen database, every number could be recovered in minutes. The
//! relay therefore stores `HMAC(pepper, phone_hash)` instead, which cannot be tested
//! against guesses without the pepper. Likewise the de-duplication record of a stored
//! message is `HMAC(pepper, sender ‖ client id)` in a row keyed by `HMAC(pepper, sender ‖
//! position)`, enough to recognise a resend and no longer saying who sent what. Every relay instance on one database must share the pepper; the
//! store refuses to open with a different one (`fingerprint`).

use std::path::Path;

use hmac::{Hmac, Mac};
use privcomm_protocol::PhoneHash;
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroizing;

/// The variable that gives the pepper, and the file in the data dir it is kept in otherwise.
pub const PEPPER_SETTING: &str = "PRIVCOMM_PHONE_PEPPER";
const PEPPER_FILE: &str = "phone_pepper";

/// Domain separation: the same pepper keys three unrelated things.
const PHONE_KEY_CONTEXT: &[u8] = b"privcomm-phone-key-v1\0";
const DELIVERY_KEY_CONTEXT: &[u8] = b"privcomm-delivery-key-v1\0";
const SEND_COUNTER_CONTEXT: &[u8] = b"privcomm-send-counter-v1\0";
const SEND_SLOT_CONTEXT: &[u8] = b"privcomm-send-slot-v1\0";
const FINGERPRINT_CONTEXT: &[u8] = b"privcomm-pepper-fingerprint-v1\0";
const CODE_CONTEXT: &[u8] = b"privcomm-verification-code-v1\0";
const LOCK_CONTEXT: &[u8] = b"privcomm-registration-lock-v1\0";
const SESSION_CONTEXT: &[u8] = b"privcomm-verification-session-v1\0";

/// Bytes of a delivery key: 128 bits, so two different messages never share one by chance.
pub const DELIVERY_KEY_LEN: usize = 16;

/// What the relay stores in place of a phone hash: 64 lowercase hex characters of
/// `HMAC-SHA256(pepper, phone_hash)`. Only `Pepper::phone_key` makes one, so a raw phone hash
/// cannot reach storage by mistake.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PhoneKey(String);

impl PhoneKey {
    /// The stored text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A keyed hash the relay stores in place of ids: a message's (sender, client id), a
/// sender's counter, a slot of a sender's window.
pub type DeliveryKey = [u8; DELIVERY_KEY_LEN];

/// The relay's pepper.
pub struct Pepper {
    /// HMAC keyed with the pepper, cloned for each use.
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pepper").finish_non_exhaustive()
    }
}

/// The pepper could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("loading the phone pepper: {0}")]
pub struct PepperError(#[from] std::io::Error);

impl Pepper {
    /// A pepper from its secret bytes (at least `secrets::MIN_SECRET_LEN`).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
        Self { mac }
    }

    /// The configured pepper (`PRIVCOMM_PHONE_PEPPER`), else `<data_dir>/phone_pepper`,
    /// generated on first start (0600; refused when others may read it).
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<Self, PepperError> {
        let secret: Zeroizing<Vec<u8>> =
            crate::secrets::load_or_create(configured, PEPPER_SETTING, data_dir, PEPPER_FILE)?;
        Ok(Self::new(&secret))
    }

    fn keyed(&self, context: &[u8], parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(context);
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The stored form of `phone_hash`.
    pub fn phone_key(&self, phone_hash: &PhoneHash) -> PhoneKey {
        self.phone_key_of(phone_hash.as_str())
    }

    /// The stored form of a phone hash already in storage in the clear (an upgrade from a
    /// schema without the pepper).
    pub(crate) fn phone_key_of(&self, phone_hash: &str) -> PhoneKey {
        PhoneKey(hex::encode(
            self.keyed(PHONE_KEY_CONTEXT, &[phone_hash.as_bytes()]),
        ))
    }

    /// The de-duplication key of the message `sender` sent with `client_id`.
    pub fn delivery_key(&self, sender: Uuid, client_id: Uuid) -> DeliveryKey {
        truncated(self.keyed(
            DELIVERY_KEY_CONTEXT,
            &[sender.as_bytes(), client_id.as_bytes()],
        ))
    }

    /// The key of `sender`'s count of stored messages (`send_counters`): unlinkable to the
    /// sender, and to the sender's remembered messages, without the pepper.
    pub fn send_counter_key(&self, sender: Uuid) -> DeliveryKey {
        truncated(self.keyed(SEND_COUNTER_CONTEXT, &[sender.as_bytes()]))
    }

    /// The key of `sender`'s `position`-th stored message in its window of remembered
    /// messages (`recent_sends`): unlinkable to the sender's other positions without the
    /// pepper, and never reused, so copies of the database do not group a sender's messages.
    pub fn send_slot_key(&self, sender: Uuid, position: u64) -> DeliveryKey {
        truncated(self.keyed(
            SEND_SLOT_CONTEXT,
            &[sender.as_bytes(), &position.to_be_bytes()],
        ))
    }

    /// What the relay stores of a verification code sent for `phone_key`: a keyed hash,
    /// so a copy of the database does not hold the code (and a million guesses against it
    /// need the pepper).
    pub fn code_hash(&self, phone_key: &PhoneKey, code: &str) -> [u8; 32] {
        self.keyed(
            CODE_CONTEXT,
            &[phone_key.as_str().as_bytes(), code.as_bytes()],
        )
    }

    /// What the relay stores of a verification session id: the id itself is the
    /// requester's secret, so the database holds only its keyed hash.
    pub fn session_key(&self, session: &str) -> String {
        hex::encode(self.keyed(SESSION_CONTEXT, &[session.as_bytes()]))
    }

    /// What the relay stores of `user`'s registration lock token.
    pub fn lock_verifier(&self, user: Uuid, token: &[u8]) -> [u8; 32] {
        self.keyed(LOCK_CONTEXT, &[user.as_bytes(), token])
    }

    /// A short value that identifies this pepper without revealing it; the database keeps the
    /// one it was written with, so a relay started with another pepper (which would make
    /// every stored number unfindable) is refused instead.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.keyed(FINGERPRINT_CONTEXT, &[])[..8])
    }
}

/// The first `DELIVERY_KEY_LEN` bytes of a keyed hash: 128 bits are plenty to tell
/// stored rows apart, and half the index.
fn truncated(full: [u8; 32]) -> DeliveryKey {
    let mut key = [0u8; DELIVERY_KEY_LEN];
    key.copy_from_slice(&full[..DELIVERY_KEY_LEN]);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    fn hash_of(number: &str) -> PhoneHash {
        PhoneHash::parse(&hex::encode(Sha256::digest(number.as_bytes()))).unwrap()
    }

    #[test]
    fn keys_depend_on_the_pepper_and_hide_the_hash() {
        let a = Pepper::new(&[1u8; 32]);
        let b = Pepper::new(&[2u8; 32]);
        let hash = hash_of("+14155550123");
        let key = a.phone_key(&hash);
        assert_eq!(key, a.phone_key(&hash));
        assert_ne!(key, b.phone_key(&hash));
        assert_ne!(key.as_str(), hash.as_str());
        assert_eq!(key.as_str().len(), 64);
        assert!(
            PhoneHash::parse(key.as_str()).is_ok(),
            "same shape as a hash"
        );
        assert_ne!(key, a.phone_key(&hash_of("+14155550124")));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
    }

    #[test]
    fn delivery_keys_name_one_message_of_one_sender() {
        let pepper = Pepper::new(&[3u8; 32]);
        let (s1, s2, c1, c2) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let key = pepper.delivery_key(s1, c1);
        assert_eq!(key, pepper.delivery_key(s1, c1));
        assert_ne!(key, pepper.delivery_key(s1, c2));
        assert_ne!(key, pepper.delivery_key(s2, c1));
        // Neither id appears in the key.
        assert!(!key
            .windows(4)
            .any(|w| s1.as_bytes().windows(4).any(|x| x == w)));
    }

    #[test]
    fn the_pepper_is_generated_once_into_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pepper::load(None, dir.path()).unwrap();
        let b = Pepper::load(None, dir.path()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let configured = "x".repeat(32);
        let c = Pepper::load(Some(&configured), dir.path()).unwrap();
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert!(Pepper::load(Some("short"), dir.path()).is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = dir.path().join(PEPPER_FILE);
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(Pepper::load(None, dir.path()).is_err());
        }
    }
}
