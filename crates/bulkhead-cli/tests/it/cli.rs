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
