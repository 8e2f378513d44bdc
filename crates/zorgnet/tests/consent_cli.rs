//! End-to-end tests of `zorgnet organisation` and `zorgnet consent` against a real hub
//! process: the operator registers organisations and gets their keys; an organisation
//! records, lists and revokes a person's directives; and each refusal (a wrong key, a BSN
//! failing the 11-check, a duplicate registration) is a non-zero exit with the reason.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::{BINARY, Running};

const BSN: &str = "123456782";

fn start_hub(data: &Path) -> Running {
    Running::start(&[
        "hub",
        "--insecure-dev",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
    ])
}

fn zorgnet<S: AsRef<str>>(args: &[S]) -> Output {
    Command::new(BINARY)
        .args(args.iter().map(AsRef::as_ref))
        .env("RUST_LOG", "warn")
        .env_remove("ZORGNET_HUB")
        .env_remove("ZORGNET_HUB_KEY")
        .output()
        .unwrap()
}

fn succeeded<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> String {
    let output = zorgnet(args);
    assert!(
        output.status.success(),
        "zorgnet {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn failed<S: AsRef<str> + std::fmt::Debug>(args: &[S]) -> String {
    let output = zorgnet(args);
    assert_eq!(
        output.status.code(),
        Some(1),
        "zorgnet {args:?} should have failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn the_operator_registers_organisations_and_an_organisation_records_and_revokes_an_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let hub = start_hub(&dir.path().join("hub"));
    let admin = dir.path().join("hub/admin.key");
    let admin = admin.to_str().unwrap();
    let add = |ura: &str, name: &str| {
        succeeded(&[
            "organisation",
            "add",
            "--hub",
            &hub.url,
            "--admin-key-file",
            admin,
            "--ura",
            ura,
            "--name",
            name,
        ])
    };
    let key = add("00000011", "Huisartsenpraktijk De Linde");
    let key = key.trim();
    assert!(
        key.starts_with("zn_") && !key.contains(char::is_whitespace),
        "add prints the key alone: {key:?}"
    );
    add("00000022", "Ziekenhuis Rivierenland");
    let listed = succeeded(&[
        "organisation",
        "list",
        "--hub",
        &hub.url,
        "--admin-key-file",
        admin,
    ]);
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        [
            "00000011  Huisartsenpraktijk De Linde",
            "00000022  Ziekenhuis Rivierenland"
        ]
    );
    let again = failed(&[
        "organisation",
        "add",
        "--hub",
        &hub.url,
        "--admin-key-file",
        admin,
        "--ura",
        "00000011",
        "--name",
        "Dubbel",
    ]);
    assert!(again.contains("already registered"), "{again}");
    // An organisation's key is not the operator's.
    let key_file = dir.path().join("org.key");
    std::fs::write(&key_file, key).unwrap();
    let refused = failed(&[
        "organisation",
        "add",
        "--hub",
        &hub.url,
        "--admin-key-file",
        key_file.to_str().unwrap(),
        "--ura",
        "00000033",
        "--name",
        "Apotheek",
    ]);
    assert!(refused.contains("refused"), "{refused}");

    let person = ["--hub", hub.url.as_str(), "--hub-key", key, "--bsn", BSN];
    let consent = |action: &[&str]| {
        let mut args = vec!["consent"];
        args.extend_from_slice(action);
        args.extend_from_slice(&person);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    assert_eq!(succeeded(&consent(&["list"])).trim(), "no directives");
    let recorded = succeeded(&consent(&["opt-out", "--category", "lab-results"]));
    let id = recorded.split_whitespace().next().unwrap().to_string();
    assert!(
        uuid_like(&id),
        "the line starts with the directive's id: {recorded}"
    );
    assert!(
        recorded.contains("active  opt-out deny  lab-results") && recorded.contains("00000011"),
        "{recorded}"
    );
    let listed = succeeded(&consent(&["list"]));
    assert_eq!(listed, recorded, "list shows the one directive");
    assert!(!listed.contains(BSN), "the BSN is never printed back");

    let revoked = succeeded(&consent(&["revoke", &id]));
    assert!(
        revoked.starts_with(&format!("{id}  revoked  opt-out")),
        "{revoked}"
    );
    let listed = succeeded(&consent(&["list"]));
    assert!(listed.contains("revoked"), "{listed}");
    let twice = failed(&consent(&["revoke", &id]));
    assert!(twice.contains("already revoked"), "{twice}");

    // Refusals: a BSN failing the 11-check never reaches the hub; a wrong key is refused.
    let bad_bsn = failed(&[
        "consent",
        "list",
        "--hub",
        &hub.url,
        "--hub-key",
        key,
        "--bsn",
        "123456789",
    ]);
    assert!(bad_bsn.contains("11-check"), "{bad_bsn}");
    let wrong_key = failed(&[
        "consent",
        "emergency-opt-out",
        "--hub",
        &hub.url,
        "--hub-key",
        "zn_not-a-key",
        "--bsn",
        BSN,
    ]);
    assert!(wrong_key.contains("401"), "{wrong_key}");
    let not_an_id = failed(&consent(&["revoke", "../../registry"]));
    assert!(not_an_id.contains("UUID"), "{not_an_id}");
}

fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}
