//! `bulkhead verify`: every check passes on an intact deployment and fails when its
//! protection is removed (one mutation at a time, reverted after).

use std::path::Path;
use std::process::Command;

use bulkhead_pgcluster::{Cluster, Durability};
use serde_json::Value;

use crate::support::{BIN, Running, workdir};

/// `bulkhead verify --json` (plus `extra`): exit status and the report.
fn verify(cwd: &Path, extra: &[&str]) -> (bool, Value) {
    let out = Command::new(BIN)
        .arg("verify")
        .arg("--json")
        .args(extra)
        .current_dir(cwd)
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// `(check, scope)` of every failed finding.
fn failures(report: &Value) -> Vec<(String, String)> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "FAIL")
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_owned(),
                f["scope"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn sql(cwd: &Path, database: &str, statements: &str) {
    let (cluster, _) =
        Cluster::open_or_init(&cwd.join(".bulkhead/postgres"), Durability::Durable).unwrap();
    let (client, conn) =
        tokio_postgres::connect(&cluster.superuser_url(database), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    client.batch_execute(statements).await.unwrap();
}

/// What is removed, in which database, the mutation, its revert, and the `(check, scope)`
/// that must fail.
type Mutation<'a> = (&'a str, &'a str, &'a str, &'a str, (&'a str, &'a str));

#[tokio::test(flavor = "multi_thread")]
async fn every_check_fails_when_its_protection_is_removed_and_passes_intact() {
    let cwd = workdir();
    let dir = cwd.path();
    let mut up = Running::spawn_env(
        dir,
        &["up", "--listen", "127.0.0.1:0"],
        &[("BULKHEAD_SERVE__CANARY_INTERVAL_SECS", "1")],
    );
    let addr = up.wait_listening();
    assert!(up.wait_logged("example app `helpdesk` is ready"));

    // Intact: everything passes; the sockets check needs the running server's pid.
    let (ok, report) = verify(dir, &["--serve-pid", &up.pid().to_string()]);
    assert!(ok, "{report:#}");
    assert!(failures(&report).is_empty());
    let checks: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["check"].as_str().unwrap())
        .collect();
    for expected in [
        "catalog.roles",
        "catalog.rls",
        "catalog.policies",
        "catalog.references",
        "catalog.public_privileges",
        "probe.unscoped",
        "probe.forged_tenant",
        "probe.other_database",
        "identity.keys_unique",
        "identity.cross_tenant_token",
        "identity.algorithms",
        "boundary.profile",
        "boundary.egress_default",
        "boundary.egress_probe",
        "boundary.sockets",
        "boundary.compartments",
        "levels.observed",
    ] {
        assert!(checks.contains(&expected), "{expected} in {checks:?}");
    }
    assert_eq!(report["summary"]["skip"], 0);

    let app_db = "bh_helpdesk";
    let silo = "bh_helpdesk_t_initech";
    // (what is removed, database, mutation, revert, the failure it must cause)
    let cases: [Mutation; 7] = [
        (
            "FORCE on one table",
            app_db,
            "ALTER TABLE public.ticket NO FORCE ROW LEVEL SECURITY",
            "ALTER TABLE public.ticket FORCE ROW LEVEL SECURITY",
            ("catalog.rls", "helpdesk"),
        ),
        (
            "NOBYPASSRLS of the runtime role",
            app_db,
            "ALTER ROLE bh_helpdesk_rt BYPASSRLS",
            "ALTER ROLE bh_helpdesk_rt NOBYPASSRLS",
            ("catalog.roles", "helpdesk"),
        ),
        (
            "CONNECT revoked from PUBLIC on a tenant database",
            app_db,
            &format!("GRANT CONNECT ON DATABASE {silo} TO PUBLIC"),
            &format!("REVOKE CONNECT ON DATABASE {silo} FROM PUBLIC"),
            ("catalog.public_privileges", "helpdesk/initech"),
        ),
        (
            "WITH CHECK of a policy",
            app_db,
            "DROP POLICY bulkhead_tenant_update ON t_globex.ticket; \
             CREATE POLICY bulkhead_tenant_update ON t_globex.ticket FOR UPDATE \
             USING (tenant_id = (SELECT current_setting('bulkhead.tenant_id', true)))",
            "DROP POLICY bulkhead_tenant_update ON t_globex.ticket; \
             CREATE POLICY bulkhead_tenant_update ON t_globex.ticket FOR UPDATE \
             USING (tenant_id = (SELECT current_setting('bulkhead.tenant_id', true))) \
             WITH CHECK (tenant_id = (SELECT current_setting('bulkhead.tenant_id', true)))",
            ("catalog.policies", "helpdesk/globex"),
        ),
        (
            "separate realm keys",
            "bulkhead",
            "INSERT INTO bulkhead_identity.realm_key (tenant_id, kid, sealed, public_key, created_at, active, verify_until) \
             SELECT 'globex', kid, sealed, public_key, created_at, false, 99999999999 \
             FROM bulkhead_identity.realm_key WHERE tenant_id = 'acme' AND active",
            "DELETE FROM bulkhead_identity.realm_key WHERE tenant_id = 'globex' AND kid IN \
             (SELECT kid FROM bulkhead_identity.realm_key WHERE tenant_id = 'acme')",
            ("identity.keys_unique", "platform"),
        ),
        (
            "egress deny by default",
            "bulkhead",
            "UPDATE bulkhead_control.tenant SET network = '{\"default\": \"allow\", \"allow\": []}' WHERE id = 'acme'",
            "UPDATE bulkhead_control.tenant SET network = '{\"default\": \"deny\", \"allow\": []}' WHERE id = 'acme'",
            ("boundary.egress_default", "helpdesk/acme"),
        ),
        (
            "a database tenant's rows only in its database",
            app_db,
            "INSERT INTO public.customer (tenant_id, name) VALUES ('initech', 'misplaced')",
            "DELETE FROM public.customer WHERE tenant_id = 'initech'; \
             DELETE FROM public.bulkhead_search_outbox WHERE tenant_id = 'initech'",
            ("levels.observed", "helpdesk/initech"),
        ),
    ];
    for (what, db, mutation, revert, expected) in cases {
        sql(dir, db, mutation).await;
        let (ok, report) = verify(dir, &[]);
        let failed = failures(&report);
        sql(dir, db, revert).await;
        assert!(!ok, "without {what}, verify must exit non-zero");
        assert!(
            failed.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "without {what}: expected {expected:?} in {failed:?}"
        );
    }
    let (ok, report) = verify(dir, &[]);
    assert!(ok, "reverted: {:?}", failures(&report));
    // A master key its workers may read (mode 0644) fails the compartments check.
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.join(".bulkhead/master.key");
        let pid = up.pid().to_string();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, report) = verify(dir, &["--serve-pid", &pid]);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!ok, "a readable master key must fail verify");
        assert!(
            failures(&report).contains(&("boundary.compartments".into(), "platform".into())),
            "{:?}",
            failures(&report)
        );
        let (ok, report) = verify(dir, &["--serve-pid", &pid]);
        assert!(ok, "master key 0600 again: {:?}", failures(&report));
    }

    // The canary inside the server finds the same: metrics, and the audit log.
    let metrics = || crate::support::get(addr, "/metrics").1;
    let eventually = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    eventually("a canary run", &|| {
        metrics().contains("bulkhead_verify_checks{status=\"PASS\"}")
    });
    sql(dir, "bulkhead", cases[5].2).await;
    let failed =
        r#"bulkhead_verify_failed{check="boundary.egress_default",scope="helpdesk/acme"} 1"#;
    eventually("the canary reports the failure", &|| {
        metrics().contains(failed)
    });
    sql(dir, "bulkhead", cases[5].3).await;
    eventually("the canary sees it fixed", &|| {
        let m = metrics();
        m.contains("bulkhead_verify_checks{status=\"FAIL\"} 0") && !m.contains(failed)
    });
    let audit = Command::new(BIN)
        .args(["audit", "list", "--json"])
        .current_dir(dir)
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("verify.failure") && audit.contains("boundary.egress_default"),
        "{audit}"
    );

    // A signed report checks; a changed one does not, nor one checked with another key.
    let (ok, _) = verify(dir, &["--sign", "--out", "report.json"]);
    assert!(ok);
    let check = |file: &str, extra: &[&str]| {
        Command::new(BIN)
            .args(["verify", "--check-signature", file])
            .args(extra)
            .current_dir(dir)
            .status()
            .unwrap()
            .success()
    };
    assert!(check("report.json", &[]));
    let mut tampered: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).unwrap()).unwrap();
    tampered["findings"][0]["status"] = "FAIL".into();
    std::fs::write(dir.join("tampered.json"), tampered.to_string()).unwrap();
    assert!(!check("tampered.json", &[]));
    assert!(!check("report.json", &["--public-key", &"ab".repeat(32)]));
    up.signal("TERM");
    assert!(up.wait().success());
}
