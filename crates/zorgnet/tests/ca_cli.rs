//! `zorgnet ca` end to end against the built binary: `init` makes a CA with a private key
//! and refuses to overwrite one; `issue` writes an organisation's certificate (its URA where
//! a UZI server certificate has it), a 0600 key and the CA certificate, and refuses bad
//! input and an existing key; `revoke` by serial and by file, not of another CA's
//! certificate; `crl` signs a list of the revoked serials. No private key is ever printed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};
use zorgnet_trust::tls::{PeerIdentity, read_certificates, read_crl};

const BINARY: &str = env!("CARGO_BIN_EXE_zorgnet");

fn zorgnet(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        .env_remove("ZORGNET_CA_DIR")
        .output()
        .expect("run zorgnet")
}

fn succeeds(args: &[&str]) -> String {
    let output = zorgnet(args);
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs a command that must fail with exit status 1; returns its stderr.
fn fails(args: &[&str]) -> String {
    let output = zorgnet(args);
    assert_eq!(output.status.code(), Some(1), "{args:?} should fail");
    String::from_utf8(output.stderr).unwrap()
}

fn key_body(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).unwrap();
    pem.lines().nth(1).unwrap().to_string()
}

fn identity(dir: &Path) -> PeerIdentity {
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();
    PeerIdentity::from_certificate(&read_certificates(&pem).unwrap()[0]).unwrap()
}

#[test]
fn a_ca_issues_revokes_and_lists_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca = ca.to_str().unwrap();
    let mut printed = succeeds(&["ca", "init", "--out", ca]);
    let ca_key = Path::new(ca).join("ca-key.pem");
    assert_eq!(
        std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let ca_pem = std::fs::read(Path::new(ca).join("ca.pem")).unwrap();
    assert!(fails(&["ca", "init", "--out", ca]).contains("already holds a CA"));
    assert_eq!(std::fs::read(Path::new(ca).join("ca.pem")).unwrap(), ca_pem);

    let gp = dir.path().join("gp");
    let gp = gp.to_str().unwrap();
    printed += &succeeds(&[
        "ca",
        "issue",
        "--ca",
        ca,
        "--ura",
        "12345678",
        "--name",
        "Huisartsenpraktijk De Linde",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--days",
        "30",
        "--out",
        gp,
    ]);
    let gp_identity = identity(Path::new(gp));
    assert_eq!(gp_identity.ura.as_deref(), Some("12345678"));
    assert_eq!(gp_identity.name, "Huisartsenpraktijk De Linde");
    assert!(printed.contains(&gp_identity.serial), "{printed}");
    let gp_key = Path::new(gp).join("key.pem");
    assert_eq!(
        std::fs::metadata(&gp_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(Path::new(gp).join("ca.pem")).unwrap(), ca_pem);
    // An existing key is never overwritten, and nothing is issued then.
    let before = std::fs::read_to_string(&gp_key).unwrap();
    assert!(
        fails(&[
            "ca", "issue", "--ca", ca, "--ura", "12345678", "--name", "X", "--out", gp
        ])
        .contains("never overwritten")
    );
    assert_eq!(std::fs::read_to_string(&gp_key).unwrap(), before);

    let hub = dir.path().join("hub");
    let hub = hub.to_str().unwrap();
    printed += &succeeds(&[
        "ca",
        "issue-service",
        "--ca",
        ca,
        "--name",
        "zorgnet hub",
        "--dns",
        "localhost",
        "--out",
        hub,
    ]);
    assert_eq!(identity(Path::new(hub)).ura, None);

    let pharmacy = dir.path().join("pharmacy");
    let pharmacy = pharmacy.to_str().unwrap();
    printed += &succeeds(&[
        "ca", "issue", "--ca", ca, "--ura", "87654321", "--name", "Apotheek", "--out", pharmacy,
    ]);
    let pharmacy_serial = identity(Path::new(pharmacy)).serial;

    printed += &succeeds(&["ca", "revoke", "--ca", ca, "--serial", &gp_identity.serial]);
    let cert = Path::new(pharmacy).join("cert.pem");
    printed += &succeeds(&["ca", "revoke", "--ca", ca, "--cert", cert.to_str().unwrap()]);
    assert!(
        succeeds(&["ca", "revoke", "--ca", ca, "--serial", &gp_identity.serial])
            .contains("already")
    );

    let crl_pem = succeeds(&["ca", "crl", "--ca", ca]);
    let crl = read_crl(crl_pem.as_bytes()).unwrap();
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).unwrap();
    let mut listed: Vec<String> = parsed
        .iter_revoked_certificates()
        .map(|revoked| zorgnet_trust::certificate::serial_hex(revoked.raw_serial()))
        .collect();
    listed.sort();
    let mut expected = vec![gp_identity.serial.clone(), pharmacy_serial];
    expected.sort();
    assert_eq!(listed, expected);
    let crl_file = dir.path().join("crl.pem");
    let crl_file = crl_file.to_str().unwrap();
    succeeds(&["ca", "crl", "--ca", ca, "--out", crl_file]);
    assert!(read_crl(&std::fs::read(crl_file).unwrap()).is_ok());

    for key in [&ca_key, &gp_key] {
        assert!(!printed.contains(&key_body(key)), "a key was printed");
    }
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca = ca.to_str().unwrap();
    let out = dir.path().join("out");
    let out = out.to_str().unwrap();
    assert!(
        fails(&[
            "ca", "issue", "--ca", ca, "--ura", "12345678", "--name", "X", "--out", out
        ])
        .contains("open the CA")
    );
    succeeds(&["ca", "init", "--out", ca]);
    for (args, reason) in [
        (vec!["--ura", "1234567", "--name", "X"], "URA"),
        (vec!["--ura", "12345678", "--name", ""], "name"),
        (
            vec!["--ura", "12345678", "--name", "X", "--days", "0"],
            "--days",
        ),
        (
            vec!["--ura", "12345678", "--name", "X", "--ip", "localhost"],
            "IP address",
        ),
        (
            vec!["--ura", "12345678", "--name", "X", "--dns", "a b"],
            "DNS name",
        ),
    ] {
        let mut full = vec!["ca", "issue", "--ca", ca, "--out", out];
        full.extend(args);
        let stderr = fails(&full);
        assert!(stderr.contains(reason), "{full:?}: {stderr}");
    }
    assert!(!Path::new(out).join("key.pem").exists());
    assert!(
        fails(&[
            "ca",
            "issue-service",
            "--ca",
            ca,
            "--name",
            "hub",
            "--out",
            out
        ])
        .contains("host")
    );
    assert!(fails(&["ca", "revoke", "--ca", ca, "--serial", "0a0b"]).contains("no certificate"));
    assert!(fails(&["ca", "revoke", "--ca", ca, "--serial", "zz"]).contains("hexadecimal"));

    // A certificate of another CA is not revoked here.
    let other = dir.path().join("other");
    let other = other.to_str().unwrap();
    succeeds(&["ca", "init", "--out", other]);
    let foreign = dir.path().join("foreign");
    let foreign = foreign.to_str().unwrap();
    succeeds(&[
        "ca", "issue", "--ca", other, "--ura", "12345678", "--name", "X", "--out", foreign,
    ]);
    let cert = Path::new(foreign).join("cert.pem");
    assert!(
        fails(&["ca", "revoke", "--ca", ca, "--cert", cert.to_str().unwrap()])
            .contains("not issued by this CA")
    );

    // A CA key others may read is refused.
    let key = Path::new(ca).join("ca-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let stderr = fails(&["ca", "crl", "--ca", ca]);
    assert!(stderr.contains("0600"), "{stderr}");
    assert!(!stderr.contains(&key_body(&key)));
}
