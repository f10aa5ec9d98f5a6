//! Applies the bus's events to this instance's connections.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Inbound;
use crate::ws::registry::ConnectionRegistry;

/// Runs until shutdown or until the bus is gone.
pub async fn run(
    mut inbound: mpsc::Receiver<Inbound>,
    connections: Arc<ConnectionRegistry>,
    shutdown: CancellationToken,
) {
    let mut events = Vec::with_capacity(256);
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = inbound.recv_many(&mut events, 256) => n,
        };
        if received == 0 {
            return;
        }
        for event in events.drain(..) {
            match event {
                Inbound::Claimed { user, conn } => connections.displace_connection(user, conn),
                Inbound::Displaced {
                    user,
                    up_to_generation,
                } => connections.displace(user, up_to_generation),
                Inbound::Resync => connections.rescan_all(),
            }
        }
    }
}
