//! End-to-end test of `zorgnet relation` against a real hub process: an organisation
//! registers, lists and ends its treatment relations; another organisation sees none of
//! them and cannot end them; refusals are a non-zero exit with the reason.

mod support;

use std::process::{Command, Output};
use support::{BINARY, Running};

const BSN: &str = "123456782";

fn zorgnet<S: AsRef<str>>(args: &[S]) -> Output {
    Command::new(BINARY)
        .args(args.iter().map(AsRef::as_ref))
        .env("RUST_LOG", "warn")
        .env_remove("ZORGNET_HUB")
        .env_remove("ZORGNET_HUB_KEY")
        .output()
        .unwrap()
}

fn succeeded(args: &[&str]) -> String {
    let output = zorgnet(args);
    assert!(
        output.status.success(),
        "zorgnet {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn failed(args: &[&str]) -> String {
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
fn an_organisation_registers_lists_and_ends_its_own_relations() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("hub");
    let hub = Running::start(&[
        "hub",
        "--insecure-dev",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data.to_str().unwrap(),
    ]);
    let admin = data.join("admin.key");
    let add = |ura: &str| {
        let key = succeeded(&[
            "organisation",
            "add",
            "--hub",
            &hub.url,
            "--admin-key-file",
            admin.to_str().unwrap(),
            "--ura",
            ura,
            "--name",
            "Zorgaanbieder",
        ]);
        key.trim().to_string()
    };
    let hospital = add("00000022");
    let other = add("00000044");
    let as_hospital = ["--hub", hub.url.as_str(), "--hub-key", hospital.as_str()];
    let as_other = ["--hub", hub.url.as_str(), "--hub-key", other.as_str()];
    let relation = |action: &[&str], access: &[&str]| {
        let mut args = vec!["relation"];
        args.extend_from_slice(action);
        args.extend_from_slice(access);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| succeeded(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let refuse = |args: Vec<String>| failed(&args.iter().map(String::as_str).collect::<Vec<_>>());

    assert_eq!(
        run(relation(&["list"], &as_hospital)).trim(),
        "no relations"
    );
    let added = run(relation(
        &["add", "--bsn", BSN, "--kind", "referral"],
        &as_hospital,
    ));
    let id = added.split_whitespace().next().unwrap().to_string();
    assert_eq!(
        id.len(),
        36,
        "the line starts with the relation's id: {added}"
    );
    assert!(added.contains("active  referral  from "), "{added}");
    assert!(!added.contains(BSN), "the BSN is never printed back");
    assert_eq!(run(relation(&["list"], &as_hospital)), added);
    assert_eq!(run(relation(&["list", "--bsn", BSN], &as_hospital)), added);
    assert_eq!(
        run(relation(&["list", "--bsn", "111222333"], &as_hospital)).trim(),
        "no relations"
    );

    // Another organisation sees nothing and ends nothing of the hospital's.
    assert_eq!(run(relation(&["list"], &as_other)).trim(), "no relations");
    let refused = refuse(relation(&["end", &id], &as_other));
    assert!(refused.contains("404"), "{refused}");

    let ended = run(relation(&["end", &id], &as_hospital));
    assert!(
        ended.starts_with(&format!("{id}  ended  referral")),
        "{ended}"
    );
    let twice = refuse(relation(&["end", &id], &as_hospital));
    assert!(twice.contains("already ended"), "{twice}");

    let too_long = refuse(relation(
        &[
            "add",
            "--bsn",
            BSN,
            "--kind",
            "own-patient",
            "--valid-from",
            "2026-01-01",
            "--valid-until",
            "2030-01-01",
        ],
        &as_hospital,
    ));
    assert!(too_long.contains("at most"), "{too_long}");
    let bad_bsn = refuse(relation(
        &["add", "--bsn", "123456789", "--kind", "referral"],
        &as_hospital,
    ));
    assert!(bad_bsn.contains("11-check"), "{bad_bsn}");
    let not_an_id = refuse(relation(&["end", "../../registry"], &as_hospital));
    assert!(not_an_id.contains("UUID"), "{not_an_id}");
}
