#!/usr/bin/env bash
# Generates the TurboModule (JSI C++, Android and iOS glue, the TypeScript bindings) from
# the FFI library with uniffi-bindgen-react-native:
#
#   scripts/generate.sh            build the host library, regenerate, write into place
#   scripts/generate.sh --check    regenerate and fail if the committed files differ
#   ... [LIBRARY]                  use this libprivcomm_ffi.so instead of building one
#
# The generated files are committed and never edited by hand; bindings/tests/react_native.rs
# runs the --check form. Generation happens in a scratch copy of the package so that the
# result does not depend on what is installed here (ubrn formats its output with a
# prettier or clang-format it finds, and we pin neither: the output is unformatted).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "$here/.." && pwd)"

check=false
if [ "${1:-}" = "--check" ]; then
  check=true
  shift
fi
lib="${1:-}"
if [ -z "$lib" ]; then
  (cd "$root" && cargo build --locked --quiet -p privcomm-ffi)
  target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
  lib="$target_dir/debug/libprivcomm_ffi.so"
fi
ubrn="$here/node_modules/uniffi-bindgen-react-native/target/debug/uniffi-bindgen-react-native"
[ -x "$ubrn" ] || bash "$here/scripts/build-ubrn.sh"

# What ubrn writes (relative to the package); everything else is ours.
generated=(Privcomm.podspec android cpp ios src/NativePrivcomm.ts src/native.tsx src/generated)

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/react-native-module"
cp "$here/package.json" "$scratch/react-native-module/"
# The crate by absolute path: cargo must see it inside its workspace (a symlink would not).
sed "s|^\(  directory:\).*|\1 $root/bindings|" "$here/ubrn.config.yaml" >"$scratch/react-native-module/ubrn.config.yaml"
(cd "$scratch/react-native-module" && "$ubrn" generate all --config ubrn.config.yaml "$lib" >/dev/null)

if $check; then
  status=0
  for path in "${generated[@]}"; do
    if ! diff -r "$scratch/react-native-module/$path" "$here/$path" >/dev/null 2>&1; then
      echo "generate: $path differs from what the library generates" >&2
      status=1
    fi
  done
  if [ "$status" -ne 0 ]; then
    echo "generate: run react-native-module/scripts/generate.sh and commit the result" >&2
  fi
  exit "$status"
fi

for path in "${generated[@]}"; do
  rm -rf "${here:?}/$path"
  mkdir -p "$(dirname "$here/$path")"
  cp -R "$scratch/react-native-module/$path" "$here/$path"
done
echo "generate: wrote ${generated[*]}"
