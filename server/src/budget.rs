//! Budgets of message bytes in flight: from the moment a send is read off a socket until
//! the writer has committed it. One budget is shared by the whole relay, and each WebSocket
//! has a small one of its own, so no connection can take the shared one for itself. A send
//! that finds the budget spent waits, and its connection stops reading: TCP pushes back on
//! the client instead of the relay buffering for it.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in units of this size (semaphore permits are `u32`).
const UNIT: usize = 1024;

/// A pool of bytes that sends hold while in flight.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    units: Arc<Semaphore>,
    total_units: u32,
}

/// Bytes held from one or more budgets; given back when dropped.
#[derive(Debug, Default)]
pub struct HeldBytes(Vec<OwnedSemaphorePermit>);

impl HeldBytes {
    /// Holds these bytes as well as `other`'s.
    pub fn and(mut self, other: HeldBytes) -> HeldBytes {
        self.0.extend(other.0);
        self
    }
}

impl ByteBudget {
    /// A budget of `max_bytes` (at least one unit).
    pub fn new(max_bytes: usize) -> Self {
        let total_units = u32::try_from(max_bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, u32::MAX >> 4);
        Self {
            units: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
        }
    }

    fn units_for(&self, bytes: usize) -> u32 {
        // A request larger than the whole budget takes all of it rather than never fitting.
        u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total_units)
    }

    /// Waits until `bytes` are free and holds them.
    pub async fn hold(&self, bytes: usize) -> HeldBytes {
        match self
            .units
            .clone()
            .acquire_many_owned(self.units_for(bytes))
            .await
        {
            Ok(permit) => HeldBytes(vec![permit]),
            // The semaphore is never closed; if it were, nothing would be held back.
            Err(_) => HeldBytes::default(),
        }
    }

    /// Bytes free now (metrics and tests).
    pub fn available_bytes(&self) -> usize {
        self.units.available_permits().saturating_mul(UNIT)
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        (self.total_units as usize)
            .saturating_sub(self.units.available_permits())
            .saturating_mul(UNIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn holds_are_given_back_on_drop_and_oversized_ones_take_everything() {
        let budget = ByteBudget::new(10 * UNIT);
        let a = budget.hold(3 * UNIT + 1).await;
        assert_eq!(budget.held_bytes(), 4 * UNIT);
        let b = budget.hold(1).await;
        assert_eq!(budget.held_bytes(), 5 * UNIT);
        drop(a);
        drop(b);
        assert_eq!(budget.held_bytes(), 0);
        let all = budget.hold(100 * UNIT).await;
        assert_eq!(budget.available_bytes(), 0);
        // The next one waits until the first is given back.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), budget.hold(1));
        assert!(waiting.await.is_err());
        drop(all);
        let _ = budget.hold(1).await;
    }

    #[tokio::test]
    async fn held_bytes_from_two_budgets_return_to_both() {
        let shared = ByteBudget::new(8 * UNIT);
        let own = ByteBudget::new(4 * UNIT);
        let held = own.hold(2 * UNIT).await.and(shared.hold(2 * UNIT).await);
        assert_eq!(
            (own.held_bytes(), shared.held_bytes()),
            (2 * UNIT, 2 * UNIT)
        );
        drop(held);
        assert_eq!((own.held_bytes(), shared.held_bytes()), (0, 0));
    }
}
