//! `bulkhead init`: a commented configuration and a master key that `bulkhead serve` starts
//! with, and never an overwrite.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::{BIN, Running, get, run, workdir};

#[tokio::test(flavor = "multi_thread")]
async fn init_writes_a_config_and_key_that_serve_starts_with_and_never_overwrites() {
    let db = bulkhead_testkit::pg().unwrap().fresh_db().await.unwrap();
    let cwd = workdir();
    let dir = cwd.path();
    std::fs::write(dir.join("db.url"), db.superuser_url()).unwrap();
    let init = [
        "--config",
        "etc/bulkhead.toml",
        "init",
        "--data-dir",
        "state",
        "--listen",
        "127.0.0.1:0",
        "--database-url-file",
        "db.url",
    ];
    let out = run(dir, &init);
    assert!(
        out.contains("next:") && out.contains("bulkhead serve"),
        "{out}"
    );
    let config = std::fs::read_to_string(dir.join("etc/bulkhead.toml")).unwrap();
    assert!(
        config.contains("database_url_file = \"db.url\""),
        "{config}"
    );
    assert!(config.contains("# A tracing filter"), "commented: {config}");
    let key = std::fs::read(dir.join("etc/master.key")).unwrap();
    assert_eq!(key.len(), 65, "64 hex digits and a newline");
    for file in ["etc/master.key", "etc/bulkhead.toml"] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // Again: refused, nothing changed.
    let again = Command::new(BIN)
        .args(init)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("exists") && err.contains("never overwrites"),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.join("etc/master.key")).unwrap(), key);
    assert_eq!(
        std::fs::read_to_string(dir.join("etc/bulkhead.toml")).unwrap(),
        config
    );
    // A key left from an earlier install is not replaced either, and no config is written.
    std::fs::remove_file(dir.join("etc/bulkhead.toml")).unwrap();
    let kept = Command::new(BIN)
        .args(init)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!kept.status.success());
    assert!(!dir.join("etc/bulkhead.toml").exists());
    assert_eq!(std::fs::read(dir.join("etc/master.key")).unwrap(), key);
    std::fs::write(dir.join("etc/bulkhead.toml"), &config).unwrap();
    // What init wrote is what serve starts with.
    let mut serve = Running::spawn(dir, &["--config", "etc/bulkhead.toml", "serve"]);
    let addr = serve.wait_serving();
    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
}
