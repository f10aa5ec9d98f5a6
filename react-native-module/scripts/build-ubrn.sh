#!/usr/bin/env bash
# Builds the `ubrn` CLI. uniffi-bindgen-react-native ships as Rust source in its npm package
# and its `ubrn` wrapper runs `cargo run` on first use; building it here, once, with a
# pinned lockfile (the package has none) keeps that out of the tests and makes it
# reproducible. Output: node_modules/uniffi-bindgen-react-native/target/debug/uniffi-bindgen-react-native
# (where `ubrn` finds it). Idempotent; about 6 minutes on 2 cores the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=node_modules/uniffi-bindgen-react-native
[ -f "$pkg/Cargo.toml" ] || { echo "build-ubrn: run npm ci in react-native-module first" >&2; exit 1; }
cp scripts/ubrn-cli.Cargo.lock "$pkg/Cargo.lock"
# The CLI is its own cargo workspace: its own target dir, never the project's.
unset CARGO_TARGET_DIR
cargo build --locked --quiet --manifest-path "$pkg/Cargo.toml" \
  -p uniffi-bindgen-react-native --bin uniffi-bindgen-react-native
