//! pgTAP tests of the generated policies and grants, run with `pg_prove` (from scripts/test-deps)
//! against a freshly provisioned app database.

use std::process::Command;

use bulkhead_model::IsolationLevel;

use crate::support::{App, HELPDESK};

#[tokio::test]
async fn the_generated_policies_pass_their_pgtap_suite() {
    let app = App::new(
        HELPDESK,
        &[
            ("acme", IsolationLevel::Row),
            ("s1", IsolationLevel::Schema),
        ],
    )
    .await;
    let su = app.superuser(&app.app.database).await;
    su.batch_execute("CREATE EXTENSION IF NOT EXISTS pgtap")
        .await
        .unwrap();
    let suite = include_str!("../pgtap/policies.sql")
        .replace("{{runtime_role}}", &app.app.runtime.role)
        .replace(
            "{{cross_role}}",
            &app.app.cross_tenant.as_ref().unwrap().role,
        )
        .replace(
            "{{owner_role}}",
            &bulkhead_model::names::owner_role(&app.manifest.app),
        )
        .replace(
            "{{schema_role}}",
            &bulkhead_model::names::tenant_role(&app.manifest.app, &crate::support::tid("s1")),
        );
    let dir = tempfile_dir();
    let file = dir.join("policies.sql");
    std::fs::write(&file, suite).unwrap();
    let out = Command::new("pg_prove")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &app.cluster.port().to_string(),
            "-U",
            "postgres",
            "-d",
            &app.app.database,
        ])
        .arg("--verbose")
        .arg(&file)
        .env("PGPASSWORD", app.cluster.superuser_password())
        .output()
        .expect("pg_prove is installed by scripts/test-deps");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "pg_prove failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("All tests successful"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "bulkhead-pgtap-{}-{}",
        std::process::id(),
        crate::support::app_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
