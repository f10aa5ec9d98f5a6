//! Privcomm relay: a blind store-and-forward server. It authenticates clients by a signature
//! challenge, hands out prekey bundles, stores opaque end-to-end encrypted payloads until
//! their recipient acknowledges them, and issues TURN credentials. It never sees plaintext.

pub mod app;
pub mod budget;
pub mod bus;
pub mod client_ip;
pub mod clock;
pub mod codes;
pub mod config;
pub mod conn_limits;
pub mod error;
pub mod extract;
pub mod files;
pub mod keys;
pub mod logging;
pub mod maintenance;
pub mod messaging;
pub mod metrics;
pub mod pepper;
pub mod prekey_claims;
pub mod rate_limit;
pub mod routes;
pub mod secrets;
pub mod serve;
pub mod state;
pub mod storage_gauge;
pub mod store;
pub mod tokens;
pub mod writer;
pub mod ws;

pub use app::RelayServer;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
