//! The tokio runtime the core runs on inside an app.
//!
//! The core spawns long-lived tasks (the relay connection, calls, WebRTC) that must keep
//! running between calls from the app, so they live on one multi-threaded runtime owned
//! here, started on first use. Each async export spawns its work onto it and awaits the
//! join handle, so the foreign executor (Kotlin coroutines, Swift tasks, JS promises) only
//! ever polls a `JoinHandle`, and no foreign thread needs a tokio context.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::error::PrivcommError;

/// Worker threads: enough for the connection, a call and the app's requests, without
/// taking every core of a phone.
const WORKER_THREADS: usize = 2;

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The shared runtime, started on first use.
pub fn runtime() -> Result<&'static Runtime, PrivcommError> {
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("privcomm-core")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PrivcommError::internal(format!("cannot start the runtime: {e}")))
}

/// Runs `work` on the shared runtime and returns its result. If the caller stops waiting
/// (a cancelled coroutine), the work still finishes: the core's operations are not
/// cancellation-safe halfway through a store write.
pub async fn run<T, E, F>(work: F) -> Result<T, PrivcommError>
where
    T: Send + 'static,
    E: Into<PrivcommError> + Send + 'static,
    F: Future<Output = Result<T, E>> + Send + 'static,
{
    runtime()?
        .spawn(work)
        .await
        .map_err(|e| PrivcommError::internal(format!("the operation did not complete: {e}")))?
        .map_err(Into::into)
}
