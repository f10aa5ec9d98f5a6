//! Test helpers shared with other crates' tests.

pub mod pg_cluster;
pub mod redis_server;
