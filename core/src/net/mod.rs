//! Talking to the relay: the REST API and the WebSocket.

pub mod rest;
pub mod ws;

pub use rest::RelayApi;
pub use ws::{RelaySocket, SocketEvent};
