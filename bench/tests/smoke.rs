//! Smoke runs of every benchmark with a tiny N, so the harness cannot rot. They assert that
//! each run completes with its invariants (everything delivered, nothing left at the relay,
//! connections held); they do not judge speed.

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let mut reports = bench_lines(args);
    assert_eq!(reports.len(), 1, "one JSON line: {reports:?}");
    reports.remove(0)
}

/// Every JSON line a run printed.
fn bench_lines(args: &[&str]) -> Vec<Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_privcomm-bench"))
        .arg("--json")
        .args(args)
        .output()
        .expect("run privcomm-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "privcomm-bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

fn postgres_url() -> String {
    std::env::var("PRIVCOMM_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn assert_full_path(report: &Value) {
    assert!(report["sent_total"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["delivered_total"], report["sent_total"], "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(
        report["left_at_relay"], 0.0,
        "every message acked and deleted: {report}"
    );
    assert!(report["latency"]["count"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["relay_cpu_cores"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn throughput_smoke_on_sqlite_at_a_fixed_rate_and_unbounded() {
    let fixed = bench(&[
        "throughput",
        "--pairs",
        "3",
        "--rate",
        "300",
        "--duration",
        "1",
        "--warmup",
        "0.3",
    ]);
    assert_full_path(&fixed);
    assert_eq!(fixed["database"], "sqlite");
    let unbounded = bench(&[
        "throughput",
        "--pairs",
        "2",
        "--rate",
        "0",
        "--window",
        "8",
        "--duration",
        "1",
        "--warmup",
        "0.2",
    ]);
    assert_full_path(&unbounded);
}

#[test]
fn throughput_smoke_on_postgres_in_two_rounds_of_one_relay() {
    let url = postgres_url();
    let reports = bench_lines(&[
        "throughput",
        "--pairs",
        "2",
        "--rate",
        "200",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--rounds",
        "2",
        "--postgres",
        &url,
    ]);
    assert_eq!(reports.len(), 2, "a report per round");
    for (round, report) in reports.iter().enumerate() {
        assert_full_path(report);
        assert_eq!(report["database"], "postgres");
        assert_eq!(report["round"], round + 1);
        assert!(
            report["database_cpu_cores"].as_f64().unwrap() > 0.0,
            "PostgreSQL's CPU is measured: {report}"
        );
    }
}

#[test]
fn connections_smoke_holds_every_connection() {
    let report = bench(&["connections", "--connections", "40", "--concurrency", "8"]);
    assert_eq!(report["connections"], 40, "{report}");
    assert_eq!(report["relay_reports"], 40.0, "{report}");
    assert!(
        report["relay_rss_after_kib"].as_u64().unwrap() > 0,
        "{report}"
    );
}

#[test]
fn offline_smoke_queues_then_drains_through_relay_and_core() {
    let report = bench(&["offline", "--messages", "60", "--window", "16"]);
    assert_eq!(report["messages"], 60, "{report}");
    assert!(report["store_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(
        report["store_per_sec_by_tenth"].as_array().unwrap().len(),
        10,
        "{report}"
    );
    assert!(
        report["core_drain_seconds"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["core_drain_relay_empty_seconds"].as_f64().unwrap()
            >= report["core_drain_seconds"].as_f64().unwrap(),
        "{report}"
    );
}

#[test]
fn e2e_smoke_measures_every_message() {
    let report = bench(&["e2e", "--rate", "50", "--duration", "1", "--warmup", "0.2"]);
    assert_eq!(report["measured"], 50, "{report}");
    assert_eq!(report["latency"]["count"], 50, "{report}");
}
