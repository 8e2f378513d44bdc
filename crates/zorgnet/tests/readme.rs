//! The README runs as written: every `sh` block of `README.md` is run, in order, by one bash
//! process in a scratch directory with the built `zorgnet` first on the PATH, as a newcomer
//! pasting the blocks into a terminal would. A command that fails fails the test, naming
//! the README line.
//!
//! What a newcomer does by hand, the test does by these rules (the README keeps to them):
//! - `cargo run --release -p zorgnet --` runs the `zorgnet` binary cargo built for this test;
//!   other `cargo` lines (test, install) are not run: running them is how this test started.
//! - A line whose comment says `runs until Ctrl-C` starts a server: the test starts it in the
//!   background and waits until its `/health` answers (its `--listen` address, or the
//!   command's default); at the end of the block it sends SIGINT (Ctrl-C) to every server
//!   and background job the block started, and each must exit with status 0.
//! - A line that needs PostgreSQL (it mentions `postgres` or runs `createdb`) runs only when
//!   `ZORGNET_TEST_POSTGRES_URL` is set, as in CI; otherwise it is skipped, loudly. Its
//!   database is dropped first, so a second run starts as fresh as the first.
//!
//! Deadlines only guard against hangs; nothing here measures time.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_zorgnet");
const README: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
/// The comment that marks a command as a server that runs until Ctrl-C.
const SERVER_MARK: &str = "runs until Ctrl-C";
/// Longest a server may take to answer `/health` after it started (the demo loads its
/// patients first, in a debug build).
const SERVER_READY_DEADLINE_S: u32 = 300;
/// Patients of the README's demo in this test.
const DEMO_PATIENTS: &str = "200";
/// Longest the whole README may take (kills a hung command).
const README_DEADLINE_S: u32 = 1_200;

/// One fenced `sh` block: its first line number in the file and its lines.
struct Block {
    first_line: usize,
    lines: Vec<String>,
}

fn sh_blocks(readme: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (index, line) in readme.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(language)) if language.trim() == "sh" => {
                current = Some(Block {
                    first_line: index + 2,
                    lines: Vec::new(),
                });
            }
            (Some(_), Some(_)) => blocks.extend(current.take()),
            (Some(block), None) => block.lines.push(line.to_string()),
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "README.md has an unclosed code block");
    blocks
}

/// The word after `--listen`, or the command's default listen address.
fn listen_address(command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    if let Some(at) = words.iter().position(|w| *w == "--listen") {
        return words
            .get(at + 1)
            .unwrap_or_else(|| panic!("--listen without an address: {command}"))
            .to_string();
    }
    match words.get(1) {
        Some(&"hub") => "127.0.0.1:7000".into(),
        _ => "127.0.0.1:8080".into(),
    }
}

fn needs_postgres(command: &str) -> bool {
    command.contains("postgres") || command.trim_start().starts_with("createdb")
}

/// The README's blocks as one bash script, with the rules of this file's doc applied.
fn script(blocks: &[Block], postgres: bool) -> String {
    let mut script = String::from(
        r#"set -euo pipefail
set -m
trap 'echo "README line $ZN_LINE failed: $BASH_COMMAND" >&2' ERR
wait_health() {
  for _ in $(seq $((5 * READY_S))); do
    # Readiness only: the server's certificate is checked by the README's own commands.
    if curl -sf "http://$1/health" >/dev/null || curl -sfk "https://$1/health" >/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "nothing answered at http(s)://$1/health" >&2
  return 1
}
stop_block() {
  for pid in $(jobs -p); do kill -INT "$pid" 2>/dev/null || true; done
  for pid in $(jobs -p); do
    if ! wait "$pid"; then echo "a server of the block before line $ZN_LINE did not stop cleanly on Ctrl-C" >&2; exit 1; fi
  done
}
"#,
    );
    for block in blocks {
        for (offset, line) in block.lines.iter().enumerate() {
            let number = block.first_line + offset;
            let command = line.split(" #").next().unwrap_or("").trim();
            if command.is_empty() || command.starts_with('#') {
                continue;
            }
            let _ = writeln!(
                script,
                "ZN_LINE={number}; echo \"[$SECONDS s] README line {number}\" >&2"
            );
            let command = command.replace("cargo run --release -p zorgnet --", "zorgnet");
            if command.starts_with("cargo ") {
                let _ = writeln!(script, "echo 'README line {number}: not run (cargo)'");
                continue;
            }
            if needs_postgres(&command) && !postgres {
                let _ = writeln!(
                    script,
                    "echo '*** README line {number} SKIPPED: it needs PostgreSQL and ZORGNET_TEST_POSTGRES_URL is not set ***' >&2"
                );
                continue;
            }
            if line.contains(SERVER_MARK) {
                let _ = writeln!(
                    script,
                    "{command} &\nwait_health {}",
                    listen_address(&command)
                );
            } else {
                let _ = writeln!(script, "{command}");
            }
        }
        let _ = writeln!(script, "stop_block");
    }
    script
}

/// Drops the databases the README's `createdb` lines create, so each run starts fresh.
fn drop_readme_databases(blocks: &[Block]) {
    for block in blocks {
        for line in &block.lines {
            let command = line.split(" #").next().unwrap_or("").trim();
            if let Some(arguments) = command.strip_prefix("createdb ") {
                let mut dropdb = Command::new("dropdb");
                dropdb.arg("--if-exists");
                dropdb.args(arguments.split_whitespace());
                let status = dropdb.status().expect("run dropdb");
                assert!(status.success(), "dropdb for `{command}` failed");
            }
        }
    }
}

#[test]
fn every_sh_block_of_the_readme_runs_as_written() {
    let readme = std::fs::read_to_string(README).expect("read README.md");
    let blocks = sh_blocks(&readme);
    assert!(blocks.len() >= 3, "README.md has its sh blocks");
    let postgres = std::env::var_os("ZORGNET_TEST_POSTGRES_URL").is_some();
    if postgres {
        drop_readme_databases(&blocks);
    } else {
        {
            // Written to the process's stderr, not through the test harness's capture, so
            // that a skip shows in every run.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "*** ZORGNET_TEST_POSTGRES_URL is not set: the README's PostgreSQL lines are SKIPPED ***"
            );
        };
    }
    let scratch = tempfile::tempdir().unwrap();
    let script_path = scratch.path().join("readme.sh");
    std::fs::write(&script_path, script(&blocks, postgres)).unwrap();
    let bin_dir = Path::new(BINARY).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("timeout")
        .arg(README_DEADLINE_S.to_string())
        .arg("bash")
        .arg(&script_path)
        .current_dir(scratch.path())
        .env("PATH", path)
        .env("READY_S", SERVER_READY_DEADLINE_S.to_string())
        .env("RUST_LOG", "warn")
        // A debug build loads the demo's default 2,000 patients slowly; the network is the same.
        .env("ZORGNET_DEMO_PATIENTS", DEMO_PATIENTS)
        .env_remove("ZORGNET_NODE")
        .env_remove("ZORGNET_HUB")
        .env_remove("ZORGNET_HUB_KEY")
        .env_remove("ZORGNET_CACERT")
        .output()
        .expect("run bash");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(
        output.status.success(),
        "the README did not run as written ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    eprintln!("{stderr}");
    // What the walkthrough must show, not only survive.
    assert!(
        stdout.contains("portal: https://127.0.0.1:8080/"),
        "the demo served: {stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("00000011") && l.contains("https://127.0.0.1:8101/fhir")),
        "the walk-through's hospital found the GP and its endpoint: {stdout}"
    );
    assert!(
        stderr.contains("1 of 1 sources answered"),
        "the walk-through's fetch reached the GP: {stderr}"
    );
    assert!(
        stdout.contains("no organisation holds data of medication about this patient"),
        "the walk-through's opt-out took effect: {stdout}"
    );
}

#[test]
fn the_script_follows_the_rules() {
    let readme = "text\n```sh\ncargo run --release -p zorgnet -- demo   # runs until Ctrl-C\ncargo test --workspace\n```\n```sh\nzorgnet hub --listen 127.0.0.1:7100 &   # background\ncreatedb -h 127.0.0.1 zorgnet\n```\n```text\nnot run\n```\n";
    let blocks = sh_blocks(readme);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].first_line, 3);
    let without = script(&blocks, false);
    assert!(without.contains("zorgnet demo &\nwait_health 127.0.0.1:8080"));
    assert!(without.contains("README line 4: not run (cargo)"));
    assert!(without.contains("zorgnet hub --listen 127.0.0.1:7100 &\n"));
    assert!(without.contains("README line 8 SKIPPED"));
    assert!(!without.contains("not run\n"));
    assert!(script(&blocks, true).contains("\ncreatedb -h 127.0.0.1 zorgnet\n"));
    assert_eq!(listen_address("zorgnet hub --data x"), "127.0.0.1:7000");
}

/// Every `ZORGNET_*` variable a command reads (as its `--help` shows it) is in the README.
#[test]
fn the_readme_lists_every_environment_variable_the_commands_read() {
    let readme = std::fs::read_to_string(README).expect("read README.md");
    let commands: &[&[&str]] = &[
        &["node"],
        &["node", "status"],
        &["hub"],
        &["demo"],
        &["generate"],
        &["import"],
        &["localize"],
        &["fetch"],
        &["consent", "opt-out"],
        &["consent", "list"],
        &["organisation", "add"],
        &["bench"],
        &["bench-hub"],
    ];
    let mut seen = 0;
    for command in commands {
        let output = Command::new(BINARY)
            .args(*command)
            .arg("--help")
            .output()
            .unwrap();
        assert!(output.status.success(), "zorgnet {command:?} --help");
        let help = String::from_utf8(output.stdout).unwrap();
        for variable in help.split("[env: ").skip(1) {
            let name: String = variable
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            assert!(
                readme.contains(&format!("`{name}`")),
                "zorgnet {command:?} reads {name}, which README.md does not list"
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 20,
        "the commands' help shows their variables ({seen})"
    );
}
