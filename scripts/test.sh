#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, clippy, all tests (the relay
# suite runs on SQLite and on the local PostgreSQL), the call tests (coturn), the demo and
# the Kotlin bindings' JUnit tests on the JVM (bindings/tests/kotlin_jvm.rs).
#
# PostgreSQL: PRIVCOMM_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

export PRIVCOMM_TEST_POSTGRES_URL="${PRIVCOMM_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
if ! pg_isready -q -d "$PRIVCOMM_TEST_POSTGRES_URL"; then
  # Machines of this project start PostgreSQL themselves; start it if it stopped.
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "test: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -d "$PRIVCOMM_TEST_POSTGRES_URL" && break; sleep 1; done
  fi
  pg_isready -q -d "$PRIVCOMM_TEST_POSTGRES_URL" || {
    echo "test: PostgreSQL is not reachable at $PRIVCOMM_TEST_POSTGRES_URL" >&2
    exit 1
  }
fi

cargo fmt --all -- --check
# One build profile for clippy and tests would be ideal; clippy's check build is
# metadata-only, so the extra cost is small.
cargo clippy --workspace --all-targets --locked -- -D warnings
# Includes examples/tests/demo.rs, which runs the README's demo binary end to end (built
# here with the test build's features, so it costs no second build).
# The Kotlin and React Native tests must run here, not skip for want of tools.
export PRIVCOMM_REQUIRE_FOREIGN_TESTS=1
cargo test --workspace --locked
