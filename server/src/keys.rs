//! Checks of public keys and XEdDSA signatures received from clients.

use libsignal_core::curve::PublicKey;
use privcomm_protocol::limits::{
    EC_KEY_TYPE_DJB, EC_PUBLIC_KEY_LEN, KEM_KEY_TYPE_KYBER1024, KYBER1024_PUBLIC_KEY_LEN,
    MAX_PREKEY_ID, MAX_REGISTRATION_ID, SIGNATURE_LEN,
};
use privcomm_protocol::rest::{OneTimePreKey, SignedPreKey};
use privcomm_protocol::ErrorCode;

use crate::error::ApiError;
use crate::store::{StoredPreKey, StoredSignedPreKey};

/// Parses a serialized identity or EC prekey: exactly `0x05 ‖ 32 bytes`.
pub fn parse_ec_public_key(bytes: &[u8], field: &str) -> Result<PublicKey, ApiError> {
    if bytes.len() != EC_PUBLIC_KEY_LEN || bytes[0] != EC_KEY_TYPE_DJB {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            format!("{field} must be a 33-byte Curve25519 public key"),
        ));
    }
    PublicKey::deserialize(bytes).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidKey,
            format!("{field} is not a valid public key"),
        )
    })
}

/// Verifies an XEdDSA signature by `identity` over `message`.
pub fn verify_signature(
    identity: &PublicKey,
    message: &[u8],
    signature: &[u8],
    field: &str,
) -> Result<(), ApiError> {
    if signature.len() == SIGNATURE_LEN && identity.verify_signature(message, signature) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::BadSignature,
            format!("{field} does not verify against the identity key"),
        ))
    }
}

/// Checks a registration id is in libsignal's 14-bit range.
pub fn check_registration_id(id: u32) -> Result<(), ApiError> {
    if id == 0 || id > MAX_REGISTRATION_ID {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            "registration_id must be between 1 and 16383",
        ));
    }
    Ok(())
}

fn check_key_id(id: u32, field: &str) -> Result<(), ApiError> {
    if id > MAX_PREKEY_ID {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            format!("{field}.key_id must fit in 24 bits"),
        ));
    }
    Ok(())
}

/// Decodes and checks a signed EC prekey against the identity key.
pub fn signed_ec_prekey(
    key: &SignedPreKey,
    identity: &PublicKey,
) -> Result<StoredSignedPreKey, ApiError> {
    check_key_id(key.key_id, "signed_prekey")?;
    let public_key = key.public_key.decode("signed_prekey.public_key")?;
    let signature = key.signature.decode("signed_prekey.signature")?;
    parse_ec_public_key(&public_key, "signed_prekey.public_key")?;
    verify_signature(identity, &public_key, &signature, "signed_prekey.signature")?;
    Ok(StoredSignedPreKey {
        key_id: key.key_id,
        public_key,
        signature,
    })
}

/// Decodes and checks a signed Kyber1024 prekey against the identity key.
pub fn signed_kyber_prekey(
    key: &SignedPreKey,
    identity: &PublicKey,
) -> Result<StoredSignedPreKey, ApiError> {
    check_key_id(key.key_id, "kyber_prekey")?;
    let public_key = key.public_key.decode("kyber_prekey.public_key")?;
    let signature = key.signature.decode("kyber_prekey.signature")?;
    if public_key.len() != KYBER1024_PUBLIC_KEY_LEN || public_key[0] != KEM_KEY_TYPE_KYBER1024 {
        return Err(ApiError::new(
            ErrorCode::InvalidKey,
            "kyber_prekey.public_key must be a serialized Kyber1024 public key",
        ));
    }
    verify_signature(identity, &public_key, &signature, "kyber_prekey.signature")?;
    Ok(StoredSignedPreKey {
        key_id: key.key_id,
        public_key,
        signature,
    })
}

/// Decodes and checks a batch of one-time prekeys: valid keys, ids unique within the batch.
pub fn one_time_prekeys(keys: &[OneTimePreKey]) -> Result<Vec<StoredPreKey>, ApiError> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.iter()
        .map(|key| {
            check_key_id(key.key_id, "one_time_prekeys")?;
            if !seen.insert(key.key_id) {
                return Err(ApiError::new(
                    ErrorCode::DuplicateKeyId,
                    format!("one-time prekey id {} appears twice", key.key_id),
                ));
            }
            let public_key = key.public_key.decode("one_time_prekeys.public_key")?;
            parse_ec_public_key(&public_key, "one_time_prekeys.public_key")?;
            Ok(StoredPreKey {
                key_id: key.key_id,
                public_key,
            })
        })
        .collect()
}
