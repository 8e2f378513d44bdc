//! A source that stops answering, in a demo network started by the test: `zorgnet
//! bench-demo` at a small size starts `zorgnet demo` (every part real, over mutual TLS), then
//! a sixth organisation's `zorgnet node` as a process of its own, holding data of the demo
//! citizen, registered at the referral index and in the address book, and stops it with
//! SIGSTOP while the hospital's internist opens the citizen's record. Every page asked while
//! it is stopped must be a 200 that names it as not answering and every other source as
//! answering (a partial view with a notice, not an error page), or the run fails. How long
//! the pages took is the benchmark's to report, not this test's to judge.

mod support;

use std::process::Command;
use support::BINARY;

/// Patients of the demo: enough for a citizen with data at three organisations.
const PATIENTS: &str = "120";
/// Measured requests per view.
const REQUESTS: &str = "2";

#[test]
fn a_stopped_source_gives_a_partial_view_with_a_notice() {
    let run = Command::new(BINARY)
        .args(["bench-demo", "--patients", PATIENTS, "--requests", REQUESTS])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run zorgnet bench-demo");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bench-demo failed: {stdout}\n{stderr}"
    );
    let silent = stdout
        .lines()
        .find(|line| line.starts_with("| a source that does not answer"))
        .unwrap_or_else(|| panic!("no silent-source row in {stdout}"));
    assert!(
        silent.contains("SIGSTOP") && silent.contains("silent: p50"),
        "the stopped source was measured: {silent}"
    );
}
