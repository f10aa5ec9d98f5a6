//! Shared bits of the examples.

use std::time::Duration;

use privcomm_core::ClientEvent;
use tokio::sync::broadcast::Receiver;

/// Waits for events until `done` returns true, or fails after `limit`.
pub async fn wait_for(
    events: &mut Receiver<ClientEvent>,
    limit: Duration,
    mut done: impl FnMut(&ClientEvent) -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) if done(&event) => return Ok(()),
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(_)) => anyhow::bail!("event stream closed"),
            Err(_) => anyhow::bail!("timed out after {limit:?}"),
        }
    }
}

/// First eight characters of an id, for readable output.
pub fn short(id: uuid::Uuid) -> String {
    id.to_string()[..8].to_owned()
}
