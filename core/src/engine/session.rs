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

/// Parses a relay payload: its type byte, then the serialized Signal message.
fn parse_payload(payload: &[u8]) -> CoreResult<CiphertextMessage> {
    let (&kind, body) = payload
        .split_first()
        .ok_or_else(|| CoreError::InvalidMessage("empty payload".into()))?;
    if kind == CiphertextMessageType::PreKey as u8 {
        Ok(CiphertextMessage::PreKeySignalMessage(
            PreKeySignalMessage::try_from(body).map_err(into_core_error)?,
        ))
    } else if kind == CiphertextMessageType::Whisper as u8 {
        Ok(CiphertextMessage::SignalMessage(
            SignalMessage::try_from(body).map_err(into_core_error)?,
        ))
    } else {
        Err(CoreError::InvalidMessage(format!(
            "unknown message type {kind}"
        )))
    }
}

/// What a `decrypt_batch` step works with: the store and decryption, both inside the
/// batch's transaction.
pub struct BatchScope<'a> {
    engine: &'a SignalEngine,
}

impl BatchScope<'_> {
    /// The store, inside the batch's transaction.
    pub fn store(&self) -> &Store {
        &self.engine.store
    }

    /// Decrypts a relay payload from `peer`; the session advance commits or rolls back with
    /// the batch's transaction.
    pub fn decrypt(&self, peer: Uuid, payload: &[u8]) -> CoreResult<Zeroizing<Vec<u8>>> {
        let message = parse_payload(payload)?;
        self.engine.decrypt_in_transaction(peer, &message)
    }
}

impl SignalEngine {
    /// After an operation refused a changed identity, keeps the presented key as pending.
    fn after_refusal<T>(&self, result: CoreResult<T>) -> CoreResult<T> {
        result.map_err(|e| self.refusal_recorded(e))
    }

    /// `error`, after keeping the presented key as pending if it is a refused identity (or
    /// the store's error if that failed).
    fn refusal_recorded(&self, error: CoreError) -> CoreError {
        if matches!(error, CoreError::IdentityChanged { .. }) {
            if let Err(e) = self.store.record_untrusted() {
                return e;
            }
        }
        error
    }

    /// Forgets the session with `peer` entirely.
    pub fn reset_session(&mut self, peer: Uuid) -> CoreResult<()> {
        self.store
            .write(|store| store.delete_session(&peer_address(peer)))
    }

    /// Retires the current session with `peer` (after messages from them kept failing to
    /// decrypt): the next message to them starts a fresh session from a new bundle, while
    /// the retired state stays (as libsignal's archived states) so that messages they sent
    /// on it still decrypt.
    pub fn renew_session(&mut self, peer: Uuid) -> CoreResult<()> {
        let address = peer_address(peer);
        self.store.write(|store| {
            if let Some(mut record) = store.session(&address)? {
                record.archive_current_state().map_err(into_core_error)?;
                store.save_session(&address, &record)?;
            }
            Ok(())
        })
    }

    /// The registration id of `peer`'s device that the current session was started with:
    /// the relay refuses a message for a device that registered again since
    /// (`stale_recipient`).
    pub fn remote_registration_id(&self, peer: Uuid) -> CoreResult<Option<u32>> {
        Ok(self
            .store
            .session(&peer_address(peer))?
            .and_then(|s| s.remote_registration_id().ok()))
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
        let message = parse_payload(payload)?;
        let result = self.store.write(|store| {
            let plaintext = self.decrypt_in_transaction(peer, &message)?;
            then(store, &plaintext)
        });
        self.after_refusal(result)
    }

    /// Decrypts `message` from `peer` inside the transaction the caller opened with
    /// `Store::write`, so the session advance commits or rolls back with it.
    fn decrypt_in_transaction(
        &self,
        peer: Uuid,
        message: &CiphertextMessage,
    ) -> CoreResult<Zeroizing<Vec<u8>>> {
        let address = peer_address(peer);
        let mut sessions = SignalView(&self.store);
        let mut identities = SignalView(&self.store);
        let mut prekeys = SignalView(&self.store);
        let signed = SignalView(&self.store);
        let mut kyber = SignalView(&self.store);
        Ok(Zeroizing::new(
            run_now(message_decrypt(
                message,
                &address,
                &mut sessions,
                &mut identities,
                &mut prekeys,
                &signed,
                &mut kyber,
                &mut rand::rng(),
            ))?
            .map_err(|e| peer_error(&self.store, peer, e))?,
        ))
    }

    /// Decrypts and handles many relay payloads in as few transactions as possible: one
    /// when nothing fails, instead of one per message.
    ///
    /// `step` handles one message (it may decrypt through the `BatchScope` and read and
    /// write the store); `finish` runs at the end of each transaction with the values of the
    /// steps it holds. A failing step must not take the others' work with it nor leave half
    /// of its own behind, so its transaction is rolled back, the steps before it are run
    /// again and committed without it, and it is run alone in a transaction of its own,
    /// which rolls back: its error is exactly what `decrypt_with` would have given.
    /// `on_failure` then sees it (with the engine, to reset a session before the next
    /// message) and says whether to go on with the rest.
    ///
    /// Returns one result per message handled, in order: all of them, unless `on_failure`
    /// stopped the batch after the failure it was shown, or committing (or `finish`) failed,
    /// whose error is then reported for the first message of that transaction.
    pub fn decrypt_batch<M, T>(
        &mut self,
        messages: &[M],
        mut step: impl FnMut(&BatchScope<'_>, &M) -> CoreResult<T>,
        mut finish: impl FnMut(&Store, &[T]) -> CoreResult<()>,
        mut on_failure: impl FnMut(&mut Self, &M, &CoreError) -> bool,
    ) -> Vec<CoreResult<T>> {
        let mut results = Vec::with_capacity(messages.len());
        let mut start = 0;
        let mut end = messages.len();
        while start < messages.len() {
            let mut failed_at = None;
            let attempt = self.store.write(|store| {
                let scope = BatchScope { engine: &*self };
                let mut done = Vec::with_capacity(end - start);
                for (offset, message) in messages[start..end].iter().enumerate() {
                    match step(&scope, message) {
                        Ok(value) => done.push(value),
                        Err(e) => {
                            failed_at = Some(start + offset);
                            return Err(e);
                        }
                    }
                }
                finish(store, &done)?;
                Ok(done)
            });
            match (attempt, failed_at) {
                (Ok(done), _) => {
                    results.extend(done.into_iter().map(Ok));
                    start = end;
                    end = messages.len();
                }
                // Commit the steps before the failure first; it is run alone afterwards.
                (Err(_), Some(at)) if at > start => end = at,
                // It failed first in its transaction, so nothing else was rolled back with it.
                (Err(error), Some(at)) => {
                    let error = self.refusal_recorded(error);
                    let go_on = on_failure(self, &messages[at], &error);
                    results.push(Err(error));
                    if !go_on {
                        break;
                    }
                    start = at + 1;
                    end = messages.len();
                }
                (Err(error), None) => {
                    results.push(Err(error));
                    break;
                }
            }
        }
        results
    }

    /// Decrypts a relay payload from `peer`.
    pub fn decrypt(&mut self, peer: Uuid, payload: &[u8]) -> CoreResult<Zeroizing<Vec<u8>>> {
        self.decrypt_with(peer, payload, |_, plain| Ok(Zeroizing::new(plain.to_vec())))
    }
}
