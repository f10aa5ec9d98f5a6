//! ICE servers for a call: TURN credentials from the relay (fetched when a call starts and
//! reused for their lifetime) plus the configured STUN servers.

use std::sync::Mutex;
use std::time::Duration;

use privcomm_protocol::ErrorCode;
use tokio::time::Instant;
use webrtc::peer_connection::RTCIceServer;

use super::config::CallConfig;
use crate::client::{connection, Shared};
use crate::error::{CoreError, CoreResult};

/// Credentials are refreshed this long before they expire, so a call never starts on one
/// that runs out while ICE is still allocating.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// TURN credentials are reused for at most this long, whatever TTL the relay states (a
/// relay saying `u64::MAX` must not overflow the deadline).
const MAX_CACHE: Duration = Duration::from_secs(24 * 60 * 60);
/// A relay without TURN is asked again after this long.
const RETRY_UNCONFIGURED: Duration = Duration::from_secs(300);

struct Cached {
    servers: Vec<RTCIceServer>,
    until: Instant,
}

/// The TURN credential cache.
#[derive(Default)]
pub(crate) struct IceServerCache {
    cached: Mutex<Option<Cached>>,
}

impl IceServerCache {
    /// TURN servers (cached) and the configured STUN servers.
    pub async fn servers(
        &self,
        shared: &Shared,
        config: &CallConfig,
    ) -> CoreResult<Vec<RTCIceServer>> {
        let mut servers = self.turn(shared).await?;
        if config.relay_only && servers.is_empty() {
            return Err(CoreError::TurnUnavailable);
        }
        if !config.stun_urls.is_empty() && !config.relay_only {
            servers.push(RTCIceServer {
                urls: config.stun_urls.clone(),
                ..Default::default()
            });
        }
        Ok(servers)
    }

    async fn turn(&self, shared: &Shared) -> CoreResult<Vec<RTCIceServer>> {
        if let Some(servers) = self.cached.lock().ok().and_then(|slot| {
            slot.as_ref()
                .filter(|c| Instant::now() < c.until)
                .map(|c| c.servers.clone())
        }) {
            return Ok(servers);
        }
        let token = connection::token(shared).await?;
        let (servers, valid_for) = match shared.api.turn_credentials(&token).await {
            Ok(creds) => {
                let valid_for = Duration::from_secs(creds.ttl)
                    .min(MAX_CACHE)
                    .saturating_sub(REFRESH_BEFORE);
                let servers = vec![RTCIceServer {
                    urls: creds.urls,
                    username: creds.username,
                    credential: creds.credential,
                }];
                (servers, valid_for)
            }
            Err(CoreError::Relay {
                code: Some(ErrorCode::TurnNotConfigured),
                ..
            }) => (Vec::new(), RETRY_UNCONFIGURED),
            Err(e) => return Err(e),
        };
        if let Ok(mut slot) = self.cached.lock() {
            *slot = Some(Cached {
                servers: servers.clone(),
                until: Instant::now()
                    .checked_add(valid_for)
                    .unwrap_or_else(Instant::now),
            });
        }
        Ok(servers)
    }
}
