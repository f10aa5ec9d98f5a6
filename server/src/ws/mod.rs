//! The WebSocket endpoint: authenticated upgrade, then one task per connection.

pub mod connection;
pub mod delivery;
pub mod registry;
mod upgrade;

pub use upgrade::ws_handler;
