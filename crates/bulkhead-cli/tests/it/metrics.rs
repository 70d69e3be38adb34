//! `/metrics` behind a token (`[serve] metrics_token_file`).

use crate::support::{Running, request, workdir};

#[test]
fn metrics_behind_a_token_answer_only_its_bearer() {
    let cwd = workdir();
    let token = "metrics-token-0123456789abcdef0123456789";
    std::fs::write(cwd.path().join("metrics.token"), format!("{token}\n")).unwrap();
    std::fs::write(
        cwd.path().join("bulkhead.toml"),
        "[serve]\nmetrics_token_file = \"metrics.token\"\n",
    )
    .unwrap();
    let mut up = Running::spawn(
        cwd.path(),
        &["up", "--listen", "127.0.0.1:0", "--no-example"],
    );
    let addr = up.wait_listening();
    let scrape = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        request(addr, "GET", "/metrics", &headers, None)
    };
    assert_eq!(scrape(None).0, 401);
    assert_eq!(scrape(Some("Bearer not-the-token")).0, 401);
    assert_eq!(scrape(Some(&format!("Bearer {token}x"))).0, 401);
    let (status, body) = scrape(Some(&format!("Bearer {token}")));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("# TYPE bulkhead_worker_up gauge"), "{body}");
    up.signal("TERM");
    assert!(up.wait().success());
    // A token too short to be one is refused at start.
    std::fs::write(cwd.path().join("metrics.token"), "short").unwrap();
    let out = std::process::Command::new(crate::support::BIN)
        .args(["up", "--listen", "127.0.0.1:0", "--no-example"])
        .current_dir(cwd.path())
        .env_remove("BULKHEAD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));
}
