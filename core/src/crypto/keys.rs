//! The data key, the keys derived from it, and sealing of stored values.
//!
//! One random 256-bit data key per database, wrapped (AES-256-GCM) by a secret from the
//! platform's `SecretStore`. From it HKDF derives a sealing key and a lookup key:
//!
//! - sealed value = `version(1) ‖ nonce(12) ‖ AES-256-GCM(plaintext)` with associated data
//!   `"privcomm-row-v1" ‖ table ‖ 0 ‖ row key`, so a ciphertext copied to another row or
//!   table fails to open;
//! - lookup key: HMAC-SHA256 of identifiers (peer ids) that would otherwise reveal who the
//!   user talks to.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{CoreError, CoreResult};

/// Format version of sealed values.
const SEALED_V1: u8 = 1;
/// Format version of the wrapped data key.
const WRAPPED_V1: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const ROW_AAD: &[u8] = b"privcomm-row-v1";
const WRAP_AAD: &[u8] = b"privcomm-data-key-v1";

/// A 256-bit key, wiped on drop.
pub type Key256 = Zeroizing<[u8; 32]>;

fn random_key() -> Key256 {
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(key.as_mut());
    key
}

/// The key that encrypts the database's contents.
pub struct DataKey(Key256);

/// The platform secret that wraps the data key.
pub struct WrapKey(Key256);

impl WrapKey {
    /// A fresh random wrapping key.
    pub fn generate() -> Self {
        Self(random_key())
    }

    /// From the secret store's bytes; anything but 32 bytes is the wrong key.
    pub fn from_bytes(bytes: &[u8]) -> CoreResult<Self> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| CoreError::WrongKey)?;
        Ok(Self(Zeroizing::new(array)))
    }

    /// The raw bytes, to hand to the secret store.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.as_ref().into())
    }
}

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> Self {
        Self(random_key())
    }

    /// Wraps this key for storage next to the data.
    pub fn wrap(&self, wrap_key: &WrapKey) -> Vec<u8> {
        let nonce = random_nonce();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + 32 + TAG_LEN);
        out.push(WRAPPED_V1);
        out.extend_from_slice(&nonce);
        let sealed = wrap_key
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: self.0.as_ref(),
                    aad: WRAP_AAD,
                },
            )
            // AES-GCM encryption only fails for inputs beyond 64 GiB.
            .unwrap_or_default();
        out.extend_from_slice(&sealed);
        out
    }

    /// Unwraps a stored data key; a wrong wrapping key is `WrongKey`.
    pub fn unwrap(wrapped: &[u8], wrap_key: &WrapKey) -> CoreResult<Self> {
        let (&version, rest) = wrapped.split_first().ok_or(CoreError::WrongKey)?;
        if version != WRAPPED_V1 || rest.len() != NONCE_LEN + 32 + TAG_LEN {
            return Err(CoreError::WrongKey);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            wrap_key
                .cipher()
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: WRAP_AAD,
                    },
                )
                .map_err(|_| CoreError::WrongKey)?,
        );
        let array: [u8; 32] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CoreError::WrongKey)?;
        Ok(Self(Zeroizing::new(array)))
    }
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

/// Keys derived from the data key, used for every row.
pub struct StoreKeys {
    seal: Aes256Gcm,
    lookup: Key256,
}

impl StoreKeys {
    /// Derives the sealing and lookup keys.
    pub fn derive(data_key: &DataKey) -> Self {
        let hkdf = Hkdf::<Sha256>::new(Some(b"privcomm-store-v1"), data_key.0.as_ref());
        let mut seal = Zeroizing::new([0u8; 32]);
        let mut lookup = Zeroizing::new([0u8; 32]);
        // HKDF-SHA256 can expand up to 8160 bytes; 32 always succeeds.
        let _ = hkdf.expand(b"seal", seal.as_mut());
        let _ = hkdf.expand(b"lookup", lookup.as_mut());
        Self {
            seal: Aes256Gcm::new(seal.as_ref().into()),
            lookup,
        }
    }

    /// Seals `plaintext` for row `row_key` of `table`.
    pub fn seal(&self, table: &'static str, row_key: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = random_nonce();
        let aad = row_aad(table, row_key);
        let sealed = self
            .seal
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a value sealed for row `row_key` of `table`.
    pub fn open(
        &self,
        table: &'static str,
        row_key: &[u8],
        sealed: &[u8],
    ) -> CoreResult<Zeroizing<Vec<u8>>> {
        let (&version, rest) = sealed.split_first().ok_or(CoreError::Tampered { table })?;
        if version != SEALED_V1 {
            return Err(CoreError::UnsupportedFormat { table, version });
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(CoreError::Tampered { table });
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = row_aad(table, row_key);
        self.seal
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| CoreError::Tampered { table })
    }

    /// Keyed hash of an identifier, used as a row key instead of the identifier.
    pub fn lookup(&self, kind: &str, value: &[u8]) -> [u8; 32] {
        // HMAC accepts any key length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.lookup.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(kind.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }
}

fn row_aad(table: &str, row_key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(ROW_AAD.len() + table.len() + 1 + row_key.len());
    aad.extend_from_slice(ROW_AAD);
    aad.extend_from_slice(table.as_bytes());
    aad.push(0);
    aad.extend_from_slice(row_key);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_are_bound_to_their_row() {
        let keys = StoreKeys::derive(&DataKey::generate());
        let sealed = keys.seal("sessions", b"row-a", b"secret");
        assert_eq!(
            &*keys.open("sessions", b"row-a", &sealed).unwrap(),
            b"secret"
        );
        assert!(matches!(
            keys.open("sessions", b"row-b", &sealed),
            Err(CoreError::Tampered { table: "sessions" })
        ));
        assert!(keys.open("prekeys", b"row-a", &sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(keys.open("sessions", b"row-a", &flipped).is_err());
        let mut versioned = sealed;
        versioned[0] = 9;
        assert!(matches!(
            keys.open("sessions", b"row-a", &versioned),
            Err(CoreError::UnsupportedFormat { version: 9, .. })
        ));
        // Fresh nonce per write: the same value seals differently.
        assert_ne!(keys.seal("t", b"k", b"v"), keys.seal("t", b"k", b"v"));
    }

    #[test]
    fn wrong_wrap_key_is_a_typed_error() {
        let data = DataKey::generate();
        let right = WrapKey::generate();
        let wrapped = data.wrap(&right);
        let back = DataKey::unwrap(&wrapped, &right).unwrap();
        assert_eq!(back.0.as_ref(), data.0.as_ref());
        assert!(matches!(
            DataKey::unwrap(&wrapped, &WrapKey::generate()),
            Err(CoreError::WrongKey)
        ));
    }

    #[test]
    fn lookup_hashes_depend_on_the_data_key() {
        let a = StoreKeys::derive(&DataKey::generate());
        let b = StoreKeys::derive(&DataKey::generate());
        assert_eq!(a.lookup("peer", b"x"), a.lookup("peer", b"x"));
        assert_ne!(a.lookup("peer", b"x"), b.lookup("peer", b"x"));
        assert_ne!(a.lookup("peer", b"x"), a.lookup("other", b"x"));
    }
}
