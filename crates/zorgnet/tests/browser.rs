//! The demo's citizen portal and professionals' viewer in a real browser: the Debian Chromium,
//! driven by `tests/browser/run.mjs` (playwright-core) with axe-core checking every page for
//! serious or critical accessibility violations. Screenshots land in
//! `target/test-output/browser/`.
//!
//! Needs `chromium` (or `$CHROMIUM`), `node` and `npm` (`scripts/install-browser-test-tools`
//! installs them on Debian); without them the test says loudly that it is skipped, unless
//! `ZORGNET_REQUIRE_BROWSER=1`, when it fails. Running zorgnet never needs Node.js: only this
//! test does.

mod support;

use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::demo::{Demo, outbox_empty};

/// Patients of the test's demo: enough for citizens with data at three organisations.
const PATIENTS: usize = 120;
/// The demo citizen the browser logs in as.
const CITIZEN: &str = "burger-1";
/// Longest the outboxes may take to deliver every registration to the referral index.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(120);
/// Longest `npm ci` may take.
const NPM_DEADLINE: Duration = Duration::from_secs(180);
/// Longest the browser walk may take.
const BROWSER_DEADLINE: Duration = Duration::from_secs(240);

/// The repository's root.
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the screenshots go: `target/test-output/browser` (beside cargo's own tmp folder).
fn output_folder() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("test-output/browser")
}

/// The Chromium to drive: `$CHROMIUM`, or Debian's.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    path.is_file().then_some(path)
}

/// Whether `program --version` runs.
fn runs(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Answers whether the test can run; says loudly why not, or fails when
/// `ZORGNET_REQUIRE_BROWSER=1` asks for the browser tests.
fn tools_present() -> bool {
    let mut missing = Vec::new();
    if chromium().is_none() {
        missing.push("chromium (/usr/bin/chromium or $CHROMIUM)");
    }
    if !runs("node") {
        missing.push("node");
    }
    if !runs("npm") {
        missing.push("npm");
    }
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{} missing: install with scripts/install-browser-test-tools",
        missing.join(", ")
    );
    if std::env::var("ZORGNET_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
        panic!("ZORGNET_REQUIRE_BROWSER=1 but {message}");
    }
    // Written to the process's stderr, not through the test harness's capture, so that a
    // skip shows in every run.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: the browser tests: {message} ***\n"
    );
    false
}

/// The version of `package` that `tests/browser/node_modules` holds, if any.
fn installed_version(tests: &Path, package: &str) -> Option<String> {
    let manifest = std::fs::read(
        tests
            .join("node_modules")
            .join(package)
            .join("package.json"),
    );
    let manifest: Value = serde_json::from_slice(&manifest.ok()?).ok()?;
    manifest["version"].as_str().map(String::from)
}

/// Runs `command` to its end, killing it after `deadline`; panics unless it succeeds.
fn run_within(mut command: Command, what: &str, deadline: Duration) {
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} failed: {status}");
            return;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} took longer than {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Installs the pinned playwright-core and axe-core into `tests/browser/node_modules` with
/// `npm ci` unless they are there in the versions `package.json` names.
fn install_test_packages(tests: &Path) {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(tests.join("package.json")).unwrap()).unwrap();
    let wanted = manifest["devDependencies"].as_object().unwrap();
    let current = wanted
        .iter()
        .all(|(package, version)| installed_version(tests, package).as_deref() == version.as_str());
    if current {
        return;
    }
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(tests)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1");
    run_within(npm, "npm ci in tests/browser", NPM_DEADLINE);
}

#[test]
fn citizens_and_professionals_use_the_demo_in_a_browser_and_every_page_is_accessible() {
    if !tools_present() {
        return;
    }
    let started = Instant::now();
    let tests = repository().join("tests/browser");
    install_test_packages(&tests);

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let demo = Demo::start(&data, PATIENTS);
    let portal = demo.after("portal: ").to_string();
    let viewer = demo.after("viewer (professionals): ").to_string();
    let bsn = demo.bsn(CITIZEN).to_string();

    // The viewer finds the citizen's data through the referral index: wait until every node
    // delivered its registrations.
    let network: Value =
        serde_json::from_slice(&std::fs::read(data.join("network.json")).unwrap()).unwrap();
    let deadline = Instant::now() + DELIVERY_DEADLINE;
    for node in network["nodes"].as_array().unwrap() {
        let key_file = Path::new(node["admin_key_file"].as_str().unwrap());
        let node_data = key_file.parent().unwrap();
        while !outbox_empty(node_data) {
            assert!(
                Instant::now() < deadline,
                "{} delivers its registrations",
                node["name"]
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "browser test: demo ready after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let out = output_folder();
    let mut node = Command::new("node");
    node.arg(tests.join("run.mjs"))
        .args(["--portal", &portal, "--viewer", &viewer, "--data"])
        .arg(&data)
        .args(["--citizen", CITIZEN, "--bsn", &bsn, "--out"])
        .arg(&out)
        .arg("--chromium")
        .arg(chromium().unwrap())
        .current_dir(&tests);
    run_within(
        node,
        "the browser walk (tests/browser/run.mjs)",
        BROWSER_DEADLINE,
    );
    let _ = writeln!(
        std::io::stderr(),
        "browser test passed in {:.1} s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    drop(demo);
}
