//! Starting `zorgnet demo` on free ports and reading what it prints, for the tests that drive
//! a whole demo network.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::BINARY;

/// A running `zorgnet demo`, killed when the test ends, also when it fails.
pub struct Demo {
    pub child: Child,
    /// What it printed up to the line about access tokens, the last of its announcement.
    pub lines: Vec<String>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Demo {
    /// Starts `zorgnet demo --port 0 --patients PATIENTS --data DATA` and waits for its
    /// announcement.
    pub fn start(data: &Path, patients: usize) -> Demo {
        let mut child = Command::new(BINARY)
            .args([
                "demo",
                "--port",
                "0",
                "--patients",
                &patients.to_string(),
                "--data",
            ])
            .arg(data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start zorgnet demo");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the demo ended early: {lines:#?}");
            }
            let last = line.contains("a demo user's access token");
            lines.push(line.trim_end().to_string());
            if last {
                break;
            }
        }
        // Keep draining stdout: a closed pipe would make the demo's next print fail.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        Demo { child, lines }
    }

    /// The rest of the line starting with `prefix`, trimmed.
    pub fn after(&self, prefix: &str) -> &str {
        self.lines
            .iter()
            .find_map(|line| line.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {:#?}", self.lines))
            .trim()
    }

    /// The demo login line of `user` (as `  burger-1  Name  citizen, BSN …; data at …`).
    pub fn login(&self, user: &str) -> &str {
        self.lines
            .iter()
            .find(|line| line.trim_start().starts_with(&format!("{user} ")))
            .unwrap_or_else(|| panic!("no demo login {user} in {:#?}", self.lines))
    }

    /// The BSN of the demo citizen `user`.
    pub fn bsn(&self, user: &str) -> &str {
        let line = self.login(user);
        line.split("BSN ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("no BSN in {line:?}"))
    }
}

/// Whether the node with data directory `node_data` has delivered every registration to the
/// hub (`zorgnet node status`).
pub fn outbox_empty(node_data: &Path) -> bool {
    let output = Command::new(BINARY)
        .args(["node", "status", "--data"])
        .arg(node_data)
        .env("RUST_LOG", "error")
        .output()
        .expect("run zorgnet node status");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).starts_with("outbox: 0 pending, 0 refused")
}
