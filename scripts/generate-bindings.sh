#!/usr/bin/env bash
# Generates the Kotlin and Swift bindings from the built FFI library (uniffi library mode):
#   android/src/main/kotlin/org/privcomm/core/privcomm.kt
#   bindings/swift/ (PrivcommCore: privcomm.swift, privcommFFI.h, privcommFFI.modulemap)
# The output is committed; `cargo test -p privcomm-ffi` fails when it no longer matches the
# library, so run this after changing the FFI and commit the result. Never edit it by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --locked -p privcomm-ffi -p uniffi-bindgen
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
case "$(uname -s)" in
  Darwin) lib="$target_dir/debug/libprivcomm_ffi.dylib" ;;
  *) lib="$target_dir/debug/libprivcomm_ffi.so" ;;
esac
bindgen="$target_dir/debug/uniffi-bindgen"

rm -rf android/src/main/kotlin/org/privcomm/core bindings/swift
for language in kotlin swift; do
  case "$language" in
    kotlin) out=android/src/main/kotlin ;;
    swift) out=bindings/swift ;;
  esac
  "$bindgen" generate "$lib" --language "$language" --out-dir "$out" --no-format \
    --config bindings/uniffi.toml --metadata-no-deps
done
echo "generate-bindings: wrote android/src/main/kotlin/org/privcomm/core and bindings/swift"
