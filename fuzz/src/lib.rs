//! Fuzz targets for every parser of untrusted input in the client core and the relay.
//!
//! Each target is a function here, called by its libFuzzer binary in `fuzz_targets/` (run
//! with `cargo +nightly fuzz run <target>`, see README.md) and, through those binaries, by
//! `tests/corpora.rs`, which replays the committed corpora in the normal test run.
//!
//! Besides "no panic", every target checks a bound or a round trip: errors never grow with
//! the input (they reach logs and apps), and what parses re-encodes to itself.

pub mod fixtures;
pub mod relay;
pub mod targets;

pub use relay::{access_token, client_frame, rest_body, signed_string};

pub use targets::{
    app_input, ciphertext, envelope, padding, peer_sdp, relay_frame, rest_answer, tampered_store,
};

/// Longest error text any target accepts, in bytes: the core's own sentence plus at most
/// `MAX_UNTRUSTED_TEXT_BYTES` of an outsider's text.
pub const MAX_ERROR_TEXT_BYTES: usize = 400;

/// Panics (a finding) when `error`'s text could carry an unbounded part of the input.
pub fn check_error(error: &privcomm_core::CoreError) {
    let text = error.to_string();
    assert!(
        text.len() <= MAX_ERROR_TEXT_BYTES,
        "error text of {} bytes: {}",
        text.len(),
        text.chars().take(120).collect::<String>()
    );
}

/// Writes a hand-made seed input of `target` to `corpus/<target>/seed-<name>` (the seed
/// examples call it).
pub fn write_seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(format!("seed-{name}")), bytes))
    {
        panic!("writing a seed of {target}: {e}");
    }
}
