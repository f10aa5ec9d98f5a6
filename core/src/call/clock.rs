//! The time source of call timers (the 60 s ring timeout). Tests drive a `ManualClock` so a
//! minute of ringing takes no wall time while everything else runs on real time.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;

/// Sleeps for call timers.
pub trait CallClock: Send + Sync + 'static {
    /// A future that completes once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Real time (tokio's timer).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl CallClock for TokioClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock that only moves when `advance` is called.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self {
            now: watch::Sender::new(Duration::ZERO),
        }
    }

    /// Moves time forward, waking every sleeper whose deadline has come.
    pub fn advance(&self, by: Duration) {
        self.now.send_modify(|now| *now += by);
    }
}

impl CallClock for ManualClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut now = self.now.subscribe();
        let deadline = *now.borrow() + duration;
        Box::pin(async move {
            // A dropped clock never reaches the deadline: the sleep stays pending.
            if now.wait_for(|t| *t >= deadline).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}
