//! Peer identities: trust on first use, changed keys, safety numbers, verification.

use libsignal_protocol::Fingerprint;
use uuid::Uuid;

use super::session::peer_address;
use super::SignalEngine;
use crate::error::{CoreError, CoreResult};
use crate::store::signal::PeerIdentity;

/// Fingerprint format version (libsignal's current one).
const FINGERPRINT_VERSION: u32 = 2;
/// Hash iterations of the fingerprint (as Signal uses).
const FINGERPRINT_ITERATIONS: u32 = 5200;

/// What two users compare to rule out a man in the middle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetyNumber {
    /// 60 digits, the same on both phones.
    pub digits: String,
    /// The QR code payload; scanning the peer's and comparing proves the same.
    pub scannable: Vec<u8>,
}

impl SignalEngine {
    /// The identity state of `peer`, if a key was ever seen.
    pub fn peer_identity(&self, peer: Uuid) -> CoreResult<Option<PeerIdentity>> {
        self.store.peer_identity(&peer_address(peer))
    }

    /// Accepts the new identity key `peer` presented (after the user was told it changed).
    /// The peer is no longer verified.
    pub fn accept_identity(&mut self, peer: Uuid) -> CoreResult<()> {
        let address = peer_address(peer);
        let known = self
            .store
            .peer_identity(&address)?
            .ok_or(CoreError::UnknownPeer { peer })?;
        let Some(pending) = known.pending else {
            return Ok(());
        };
        self.store.write(|store| {
            store.save_peer_identity(
                &address,
                &PeerIdentity {
                    trusted: pending,
                    verified: false,
                    pending: None,
                },
            )
        })
    }

    /// Marks `peer` verified or not.
    pub fn set_verified(&mut self, peer: Uuid, verified: bool) -> CoreResult<()> {
        let address = peer_address(peer);
        let mut known = self
            .store
            .peer_identity(&address)?
            .ok_or(CoreError::UnknownPeer { peer })?;
        known.verified = verified;
        self.store
            .write(|store| store.save_peer_identity(&address, &known))
    }

    /// The libsignal fingerprint of this account and `peer`'s trusted identity.
    fn fingerprint(&self, peer: Uuid) -> CoreResult<Fingerprint> {
        let account = self.store.account()?;
        let local_id = account.user_id.ok_or(CoreError::NoAccount)?;
        let remote = self
            .peer_identity(peer)?
            .ok_or(CoreError::UnknownPeer { peer })?;
        Fingerprint::new(
            FINGERPRINT_VERSION,
            FINGERPRINT_ITERATIONS,
            local_id.as_bytes(),
            account.identity.identity_key(),
            peer.as_bytes(),
            &remote.trusted,
        )
        .map_err(|e| CoreError::Protocol(e.to_string()))
    }

    /// The safety number between this account and `peer`, over the trusted identity keys.
    pub fn safety_number(&self, peer: Uuid) -> CoreResult<SafetyNumber> {
        let fingerprint = self.fingerprint(peer)?;
        Ok(SafetyNumber {
            digits: fingerprint
                .display_string()
                .map_err(|e| CoreError::Protocol(e.to_string()))?,
            scannable: fingerprint
                .scannable
                .serialize()
                .map_err(|e| CoreError::Protocol(e.to_string()))?,
        })
    }

    /// Compares the peer's scanned safety-number code with ours; on a match the peer is
    /// marked verified. A mismatch is `Ok(false)` and changes nothing.
    pub fn verify_scanned(&mut self, peer: Uuid, scanned: &[u8]) -> CoreResult<bool> {
        let fingerprint = self.fingerprint(peer)?;
        let matches = fingerprint.scannable.compare(scanned).unwrap_or(false);
        if matches {
            self.set_verified(peer, true)?;
        }
        Ok(matches)
    }
}
