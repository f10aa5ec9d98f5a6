#!/usr/bin/env bash
# The N-API flavour of the TypeScript bindings, for the Node tests: writes .napi/ (not
# committed) with the generated index.ts, privcomm.ts, privcomm-ffi.ts and a link to the
# host library LIBRARY (libprivcomm_ffi.so), which privcomm-ffi.ts loads from beside itself.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/.." && pwd)"
lib="${1:?usage: generate-napi.sh LIBRARY}"
ubrn="$here/node_modules/uniffi-bindgen-react-native/target/debug/uniffi-bindgen-react-native"
[ -x "$ubrn" ] || bash "$here/scripts/build-ubrn.sh"
rm -rf "$here/.napi"
# ubrn reads the crate's uniffi.toml through `cargo metadata`, from the crate's directory.
(cd "$root/bindings" && "$ubrn" generate napi bindings --library --ts-dir "$here/.napi" \
  --lib-colocated "$lib" >/dev/null)
ln -s "$lib" "$here/.napi/libprivcomm_ffi.so"
