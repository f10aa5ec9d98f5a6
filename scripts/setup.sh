#!/usr/bin/env bash
# Installs what building and testing the workspace needs beyond the Rust toolchain.
# Idempotent: installs only what is missing. Debian/Ubuntu (apt) hosts.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)   # libsignal-protocol build
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)                   # libopus build (opusic-sys)
command -v turnserver >/dev/null 2>&1 || need_apt+=(coturn)             # TURN in the call tests
command -v pg_isready >/dev/null 2>&1 || need_apt+=(postgresql-client)
# The Kotlin bindings' JVM tests (bindings/tests/kotlin_jvm.rs): a JDK, JNA, JUnit 5.
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jdk-headless)
[ -f /usr/share/java/jna.jar ] || need_apt+=(libjna-java)
[ -f /usr/share/java/junit-platform-console-standalone.jar ] || need_apt+=(junit5)

if ((${#need_apt[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi

# kotlinc for the JVM tests, pinned in android/jvm-test/package-lock.json.
if [ ! -x android/jvm-test/node_modules/kotlin-compiler/bin/kotlinc ]; then
  command -v npm >/dev/null 2>&1 || { echo "setup: npm is needed (Kotlin compiler)" >&2; exit 1; }
  echo "setup: installing the Kotlin compiler (npm kotlin-compiler)"
  npm ci --prefix android/jvm-test --no-audit --no-fund --loglevel=error
fi

# rustfmt and clippy are part of the checks.
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
echo "setup: ok"
