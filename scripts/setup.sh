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
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)     # the cluster tests' own Redis
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)               # the balancer in the cluster tests
# initdb/pg_ctl: tests that stop and restart PostgreSQL run a throwaway cluster of their own
# (server/tests/support/pg_cluster.rs), never the machine's shared server.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || need_apt+=(postgresql)
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

# The React Native module's tests (bindings/tests/react_native.rs): its npm packages (pinned
# by package-lock.json), the `ubrn` CLI built from its npm package's Rust source, and the
# example app's packages for its type check.
if [ ! -x react-native-module/node_modules/.bin/vitest ]; then
  echo "setup: installing the React Native module's npm packages"
  npm ci --prefix react-native-module --no-audit --no-fund --loglevel=error
fi
if [ ! -x react-native-module/node_modules/uniffi-bindgen-react-native/target/debug/uniffi-bindgen-react-native ]; then
  echo "setup: building the ubrn CLI (uniffi-bindgen-react-native; a few minutes, once)"
  bash react-native-module/scripts/build-ubrn.sh
fi
# The Node tests' N-API runtime, from the same ubrn source (the published one leaks).
bash react-native-module/scripts/build-napi-runtime.sh
if [ ! -d examples/react-native-app/node_modules ]; then
  echo "setup: installing the example app's npm packages"
  npm ci --prefix examples/react-native-app --no-audit --no-fund --loglevel=error
fi

# rustfmt and clippy are part of the checks.
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi
echo "setup: ok"
