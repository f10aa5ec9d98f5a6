//! REST handlers, one module per resource.

pub mod account;
pub mod auth;
pub mod health;
pub mod keys;
pub mod messages;
pub mod metrics;
pub mod register;
pub mod turn;
pub mod verification;
