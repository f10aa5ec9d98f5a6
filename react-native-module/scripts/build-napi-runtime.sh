#!/usr/bin/env bash
# Builds the N-API runtime the Node tests load the bindings with, from the 0.31.0-5 source
# in the uniffi-bindgen-react-native package, over the prebuilt @ubjs/node 0.31.0-3 addon
# (the newest on npm), which leaks buffers with 0.31.0-5 bindings (ubrn #420, #432, #440,
# #442) and hangs worker threads (#436). @ubjs/node loads ./uniffi-runtime-napi.<triple>.node
# in preference to its prebuilt package. Linux x86-64 only (the CI machine); elsewhere the
# prebuilt addon is used. Idempotent; about a minute on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=node_modules/uniffi-bindgen-react-native
addon=node_modules/@ubjs/node/uniffi-runtime-napi.linux-x64-gnu.node
[ "$(uname -sm)" = "Linux x86_64" ] || exit 0
[ -f "$addon" ] && exit 0
[ -f "$pkg/Cargo.toml" ] || { echo "build-napi-runtime: run npm ci in react-native-module first" >&2; exit 1; }
cp scripts/ubrn-cli.Cargo.lock "$pkg/Cargo.lock"
unset CARGO_TARGET_DIR
cargo build --locked --quiet --release --manifest-path "$pkg/Cargo.toml" -p uniffi-runtime-napi
cp "$pkg/target/release/libuniffi_runtime_napi.so" "$addon"
