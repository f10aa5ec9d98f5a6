#!/usr/bin/env bash
# Runs the benchmarks of docs/BENCHMARKS.md, each RUNS times (default 3), and appends one
# JSON line per run to OUT (default target/bench-results.jsonl). Release build; the relay
# runs in its own process on loopback. Needs the local PostgreSQL for the PostgreSQL rows.
#
#   scripts/bench.sh                 # everything (≈15 min on 2 cores, after the build)
#   scripts/bench.sh throughput      # one group: throughput | connections | offline | e2e | core
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
OUT="${OUT:-target/bench-results.jsonl}"
PG="${PRIVCOMM_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
ONLY="${1:-all}"

cargo build --release --locked -p privcomm-bench
BENCH=target/release/privcomm-bench
mkdir -p "$(dirname "$OUT")"

run() {
  for i in $(seq "$RUNS"); do
    echo "== privcomm-bench $* (run $i of $RUNS)" >&2
    "$BENCH" --json "$@" | tee -a "$OUT"
  done
}

want() { [ "$ONLY" = all ] || [ "$ONLY" = "$1" ]; }

if want throughput; then
  for rate in 5000 10000 0; do run throughput --rate "$rate"; done
  for rate in 5000 10000 0; do run throughput --rate "$rate" --postgres "$PG"; done
  # Three 30 s runs against one relay process: does it slow as its tables grow?
  run throughput --rate 0 --duration 30 --rounds 3 --postgres "$PG"
  # The same on tmpfs: what the relay costs apart from waiting for the disk.
  for rate in 5000 10000 0; do run throughput --rate "$rate" --data-dir /dev/shm; done
fi
if want connections; then run connections --connections 19000; fi
if want offline; then run offline --messages 10000; fi
if want e2e; then run e2e --rate 1000; fi
if want core; then
  cargo bench --locked -p privcomm-core --bench store
  cargo bench --locked -p privcomm-core --bench call_setup
fi
echo "results appended to $OUT" >&2
