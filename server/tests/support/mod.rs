//! Test helpers shared with other crates' tests.

pub mod pg_cluster;
