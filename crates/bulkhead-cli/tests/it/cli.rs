//! The command line explains itself and reports bad configuration clearly.

use std::process::Command;

use crate::support::{BIN, workdir};

#[test]
fn every_subcommand_has_help_that_explains_it() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("up"), "{text}");
    let out = Command::new(BIN).args(["up", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("--database-url") && text.contains("SIGTERM"),
        "{text}"
    );
}

#[test]
fn an_unknown_config_key_fails_with_its_name() {
    let cwd = workdir();
    std::fs::write(cwd.path().join("bulkhead.toml"), "listen_adress = \"x\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("up")
        .current_dir(cwd.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_adress"), "{err}");
    assert!(
        !cwd.path().join(".bulkhead").exists(),
        "nothing started on bad config"
    );
}

#[test]
fn manifest_check_reports_every_problem_with_its_place() {
    let cwd = workdir();
    let bad = cwd.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "app: helpdesk\nentities:\n  ticket:\n    fields:\n      prio: { type: integer }\n      select: text\n",
    )
    .unwrap();
    let good = cwd.path().join("good.yaml");
    std::fs::write(
        &good,
        "app: helpdesk\nentities:\n  ticket:\n    fields:\n      title: text\n",
    )
    .unwrap();

    let out = Command::new(BIN)
        .args(["manifest", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());

    let out = Command::new(BIN)
        .args(["manifest", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:5:21: entities.ticket.fields.prio.type: unknown type \"integer\""),
        "{err}"
    );
    assert!(err.contains("entities.ticket.fields.select"), "{err}");

    let out = Command::new(BIN)
        .args(["manifest", "check", "--json"])
        .arg(&bad)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "invalid_manifest");
    assert_eq!(v["error"]["problems"].as_array().unwrap().len(), 2);
    assert_eq!(v["error"]["problems"][0]["line"], 5);
}
