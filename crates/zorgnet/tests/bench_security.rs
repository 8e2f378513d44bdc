//! `zorgnet bench-security` end to end, briefly and measuring nothing: its whole setup (a
//! temporary CA, the hub over mutual TLS, the hospital's token and treatment relations, one
//! store behind a plain and a secure server) runs, and every request of both scenarios is
//! answered 200 with security off and on. No timing is asserted.

mod support;

use std::process::Command;
use support::BINARY;

/// The report's row of one run: its cells, trimmed.
fn row<'a>(report: &'a str, scenario: &str, security: &str) -> Vec<&'a str> {
    let start = format!("| {scenario} | 1 | {security} |");
    let line = report
        .lines()
        .find(|line| line.starts_with(&start))
        .unwrap_or_else(|| panic!("no row {start} in\n{report}"));
    line.split('|').map(str::trim).collect()
}

#[test]
fn the_security_benchmark_serves_both_scenarios_with_security_off_and_on() {
    let output = Command::new(BINARY)
        .args([
            "bench-security",
            "--patients",
            "20",
            "--related",
            "5",
            "--seconds",
            "1",
            "--connections",
            "2",
            "--rounds",
            "1",
            "--handshakes",
            "5",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench-security failed: {stderr}");
    let report = String::from_utf8(output.stdout).unwrap();
    for scenario in [
        "read Patient/{id}",
        "search Observation?patient=Patient/{id}",
    ] {
        for security in ["off", "mTLS only", "on"] {
            // | scenario | round | security | req/s | p50 | p99 | CPU | CPU | requests | not 200 |
            let cells = row(&report, scenario, security);
            let requests: usize = cells[9].parse().unwrap();
            assert!(requests > 0, "{scenario} {security}: no requests\n{report}");
            assert_eq!(
                cells[10], "0",
                "{scenario} {security}: answers not 200\n{report}"
            );
        }
    }
    assert!(
        report.contains("| mutual TLS (full TLS 1.3 handshake"),
        "{report}"
    );
    assert!(report.contains("| plain HTTP |"), "{report}");
}
