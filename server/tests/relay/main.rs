//! End-to-end tests of the relay: each runs a real relay on an ephemeral port, on SQLite and
//! on PostgreSQL, and talks to it over real HTTP and WebSocket connections.

mod common;
#[path = "../support/mod.rs"]
mod support;

mod abuse;
mod accounts;
mod accounts_races;
mod at_rest;
mod auth_errors;
mod cluster;
mod crash;
mod database;
mod delivery;
mod end_to_end;
mod group_commit;
mod migrations;
mod operations;
mod prekeys;
mod store_conformance;
mod websocket;
