//! The bus of a single instance: its connection registry already reaches every connection,
//! so there is nothing to send.

use std::time::Duration;

use uuid::Uuid;

use super::{BusState, BusWait, RoutingBus};

/// The bus of a relay that runs alone.
#[derive(Debug, Default)]
pub struct InProcessBus;

impl RoutingBus for InProcessBus {
    fn state(&self) -> BusState {
        BusState::InProcess
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn claim(&self, _user: Uuid, _conn: u64, _wait: Duration) -> BusWait {
        Box::pin(std::future::ready(()))
    }

    fn release(&self, _user: Uuid, _conn: u64) -> BusWait {
        Box::pin(std::future::ready(()))
    }

    fn stored(&self, _wakes: &[(Uuid, i64)]) {}

    fn displace(&self, _user: Uuid, _up_to_generation: u32) {}
}
