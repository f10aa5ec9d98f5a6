//! Signal sessions: building them from relay bundles, encrypting and decrypting.

use libsignal_protocol::{
    message_decrypt, message_encrypt, process_prekey_bundle, CiphertextMessage,
    CiphertextMessageType, DeviceId, IdentityKey, PreKeyBundle, PreKeySignalMessage,
    ProtocolAddress, PublicKey, SessionUsabilityRequirements, SignalMessage,
};
use privcomm_protocol::rest::PreKeyBundleResponse;
use uuid::Uuid;
use zeroize::Zeroizing;

use super::{run_now, SignalEngine};
use crate::error::{CoreError, CoreResult};
use crate::store::signal::{into_core_error, SignalView};
use crate::store::Store;

/// Every account has one device; libsignal addresses it as device 1.
const DEVICE: u8 = 1;

/// The libsignal address of `peer`'s device.
pub fn peer_address(peer: Uuid) -> ProtocolAddress {
    ProtocolAddress::new(
        peer.to_string(),
        DeviceId::new(DEVICE).unwrap_or_else(|_| unreachable!("1 is a valid device id")),
    )
}

/// Maps a libsignal error, naming the peer where the error is about the peer and recovering
/// the store's own error where the store failed.
fn peer_error(
    store: &Store,
    peer: Uuid,
    err: libsignal_protocol::SignalProtocolError,
) -> CoreError {
    if let Some(stashed) = store.take_stashed_error() {
        return stashed;
    }
    match err {
        libsignal_protocol::SignalProtocolError::UntrustedIdentity(_) => {
            CoreError::IdentityChanged { peer }
        }
        libsignal_protocol::SignalProtocolError::SessionNotFound(_) => {
            CoreError::NoSession { peer }
        }
        other => into_core_error(other),
    }
}

fn bundle_field(name: &'static str, text: &privcomm_protocol::Base64String) -> CoreResult<Vec<u8>> {
    text.decode(name)
        .map_err(|e| CoreError::InvalidBundle(e.to_string()))
}

/// Converts the relay's bundle into libsignal's, checking every key parses.
fn to_prekey_bundle(bundle: &PreKeyBundleResponse) -> CoreResult<PreKeyBundle> {
    let bad = |what: &str| CoreError::InvalidBundle(format!("{what} is malformed"));
    let one_time = bundle
        .one_time_prekey
        .as_ref()
        .map(|k| -> CoreResult<_> {
            let key = PublicKey::deserialize(&bundle_field("one_time_prekey", &k.public_key)?)
                .map_err(|_| bad("one_time_prekey"))?;
            Ok((k.key_id.into(), key))
        })
        .transpose()?;
    let signed = PublicKey::deserialize(&bundle_field(
        "signed_prekey",
        &bundle.signed_prekey.public_key,
    )?)
    .map_err(|_| bad("signed_prekey"))?;
    let kyber = libsignal_protocol::kem::PublicKey::deserialize(&bundle_field(
        "kyber_prekey",
        &bundle.kyber_prekey.public_key,
    )?)
    .map_err(|_| bad("kyber_prekey"))?;
    let identity = IdentityKey::decode(&bundle_field("identity_key", &bundle.identity_key)?)
        .map_err(|_| bad("identity_key"))?;
    PreKeyBundle::new(
        bundle.registration_id,
        DeviceId::new(DEVICE).map_err(|_| bad("device id"))?,
        one_time,
        bundle.signed_prekey.key_id.into(),
        signed,
        bundle_field("signed_prekey.signature", &bundle.signed_prekey.signature)?,
        bundle.kyber_prekey.key_id.into(),
        kyber,
        bundle_field("kyber_prekey.signature", &bundle.kyber_prekey.signature)?,
        identity,
    )
    .map_err(|e| CoreError::InvalidBundle(e.to_string()))
}

/// The relay payload of a Signal message: its type byte, then the serialized message.
fn to_payload(message: &CiphertextMessage) -> Vec<u8> {
    let body = message.serialize();
    let mut payload = Vec::with_capacity(1 + body.len());
    payload.push(message.message_type() as u8);
    payload.extend_from_slice(body);
    payload
}

impl SignalEngine {
    /// After an operation refused a changed identity, keeps the presented key as pending.
    fn after_refusal<T>(&self, result: CoreResult<T>) -> CoreResult<T> {
        if matches!(result, Err(CoreError::IdentityChanged { .. })) {
            self.store.record_untrusted()?;
        }
        result
    }

    /// Forgets the session with `peer` (after a message from them could not be decrypted):
    /// the next message to them starts a fresh session from a new bundle.
    pub fn reset_session(&mut self, peer: Uuid) -> CoreResult<()> {
        self.store
            .write(|store| store.delete_session(&peer_address(peer)))
    }

    /// True if a session with `peer` exists.
    pub fn has_session(&self, peer: Uuid) -> CoreResult<bool> {
        Ok(self.store.session(&peer_address(peer))?.is_some_and(|s| {
            s.has_usable_sender_chain(
                std::time::SystemTime::now(),
                SessionUsabilityRequirements::NotStale,
            )
            .unwrap_or(false)
        }))
    }

    /// Starts a session with `peer` from the bundle the relay handed out. Signatures are
    /// verified; a changed identity is `IdentityChanged`.
    pub fn process_bundle(&mut self, peer: Uuid, bundle: &PreKeyBundleResponse) -> CoreResult<()> {
        if bundle.user_id != peer {
            return Err(CoreError::InvalidBundle(
                "bundle is for another user".into(),
            ));
        }
        let bundle = to_prekey_bundle(bundle)?;
        let address = peer_address(peer);
        let mut sessions = SignalView(&self.store);
        let mut identities = SignalView(&self.store);
        let result = self.store.write(|store| {
            run_now(process_prekey_bundle(
                &address,
                &mut sessions,
                &mut identities,
                &bundle,
                std::time::SystemTime::now(),
                &mut rand::rng(),
            ))?
            .map_err(|e| peer_error(store, peer, e))
        });
        self.after_refusal(result)
    }

    /// Encrypts `plaintext` for `peer`. The result is the relay payload: one type byte
    /// followed by the serialized Signal message.
    pub fn encrypt(&mut self, peer: Uuid, plaintext: &[u8]) -> CoreResult<Vec<u8>> {
        self.encrypt_batch(peer, &[plaintext])?
            .pop()
            .ok_or_else(|| CoreError::Protocol("encryption produced no message".into()))
    }

    /// Encrypts several messages for `peer` in one transaction: one commit for the batch
    /// instead of one per message (an outbox flush).
    pub fn encrypt_batch(&mut self, peer: Uuid, plaintexts: &[&[u8]]) -> CoreResult<Vec<Vec<u8>>> {
        let address = peer_address(peer);
        let mut sessions = SignalView(&self.store);
        let mut identities = SignalView(&self.store);
        let result = self.store.write(|store| {
            plaintexts
                .iter()
                .map(|plaintext| {
                    let message = run_now(message_encrypt(
                        plaintext,
                        &address,
                        &mut sessions,
                        &mut identities,
                        std::time::SystemTime::now(),
                        &mut rand::rng(),
                    ))?
                    .map_err(|e| peer_error(store, peer, e))?;
                    Ok(to_payload(&message))
                })
                .collect()
        });
        self.after_refusal(result)
    }

    /// Decrypts a relay payload from `peer`. Runs `then` with the plaintext inside the same
    /// transaction, so the session advance and whatever `then` stores commit together or not
    /// at all.
    pub fn decrypt_with<T>(
        &mut self,
        peer: Uuid,
        payload: &[u8],
        then: impl FnOnce(&crate::store::Store, &[u8]) -> CoreResult<T>,
    ) -> CoreResult<T> {
        let (&kind, body) = payload
            .split_first()
            .ok_or_else(|| CoreError::InvalidMessage("empty payload".into()))?;
        let message = if kind == CiphertextMessageType::PreKey as u8 {
            CiphertextMessage::PreKeySignalMessage(
                PreKeySignalMessage::try_from(body).map_err(into_core_error)?,
            )
        } else if kind == CiphertextMessageType::Whisper as u8 {
            CiphertextMessage::SignalMessage(
                SignalMessage::try_from(body).map_err(into_core_error)?,
            )
        } else {
            return Err(CoreError::InvalidMessage(format!(
                "unknown message type {kind}"
            )));
        };
        let address = peer_address(peer);
        let mut sessions = SignalView(&self.store);
        let mut identities = SignalView(&self.store);
        let mut prekeys = SignalView(&self.store);
        let signed = SignalView(&self.store);
        let mut kyber = SignalView(&self.store);
        let result = self.store.write(|store| {
            let plaintext = Zeroizing::new(
                run_now(message_decrypt(
                    &message,
                    &address,
                    &mut sessions,
                    &mut identities,
                    &mut prekeys,
                    &signed,
                    &mut kyber,
                    &mut rand::rng(),
                ))?
                .map_err(|e| peer_error(store, peer, e))?,
            );
            then(store, &plaintext)
        });
        self.after_refusal(result)
    }

    /// Decrypts a relay payload from `peer`.
    pub fn decrypt(&mut self, peer: Uuid, payload: &[u8]) -> CoreResult<Zeroizing<Vec<u8>>> {
        self.decrypt_with(peer, payload, |_, plain| Ok(Zeroizing::new(plain.to_vec())))
    }
}
