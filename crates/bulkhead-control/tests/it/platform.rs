//! Provisioning through the control plane: crash-resume, rotation, and what an app's runtime
//! credentials can (not) reach even with arbitrary SQL.

use std::sync::Arc;

use bulkhead_control::platform::{APP_STEPS, Platform, RUNTIME_PASSWORD};
use bulkhead_control::registry;
use bulkhead_model::{AppManifest, names};
use bulkhead_pg::Provisioner;
use bulkhead_testkit::{TestCluster, pg, tokio_postgres};
use bulkhead_vault::embedded::{EmbeddedAdmin, EmbeddedReader, MasterKey};
use bulkhead_vault::{BootCredential, VaultReader};

fn manifest(app: &str) -> AppManifest {
    AppManifest::from_yaml(
        &format!("app: {app}\nentities:\n  note:\n    fields:\n      text: {{ type: text, required: true }}\ncross_tenant_reads: [note]\n"),
        "t.yaml",
    )
    .unwrap()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 100_000
}

async fn platform(vault_root: &std::path::Path) -> (Platform, &'static TestCluster, EmbeddedAdmin) {
    let cluster = pg().unwrap();
    let db = cluster.fresh_db().await.unwrap();
    let client = db.superuser().await.unwrap();
    bulkhead_control::migrate(&client).await.unwrap();
    let vault = EmbeddedAdmin::open(vault_root, MasterKey::generate()).unwrap();
    let platform = Platform {
        client,
        provisioner: Provisioner::new(cluster.config(
            "postgres",
            "postgres",
            cluster.superuser_password(),
        )),
        vault: Arc::new(vault.clone()),
        actor: "test".into(),
    };
    (platform, cluster, vault)
}

/// Logs in to the app database with the password its worker would read from the vault.
async fn worker_login(
    cluster: &TestCluster,
    vault_root: &std::path::Path,
    m: &AppManifest,
    boot: &BootCredential,
) -> Result<tokio_postgres::Client, String> {
    let reader = EmbeddedReader::open(vault_root, m.app.clone(), boot).unwrap();
    let password = reader
        .get(RUNTIME_PASSWORD)
        .await
        .map_err(|e| e.to_string())?;
    let cfg = cluster.config(
        &names::app_database(&m.app),
        &names::runtime_role(&m.app),
        password.expose(),
    );
    bulkhead_testkit::connect(&cfg)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_crash_after_any_step_is_finished_by_running_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, cluster, _) = platform(dir.path()).await;
    for step in APP_STEPS {
        let m = manifest(&unique("c"));
        let err = p.create_app(&m, Some(step)).await.unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        let boot = p.create_app(&m, None).await.unwrap();
        // End state as after an uninterrupted run: every step done, one audit record,
        // credentials registered, and the worker's vault password opens the database.
        for s in APP_STEPS {
            assert!(
                registry::step_done(&p.client, &format!("app/{}", m.app), s)
                    .await
                    .unwrap(),
                "{step}: {s}"
            );
        }
        let audits: i64 = p
            .client
            .query_one(
                "SELECT count(*) FROM bulkhead_control.audit_log WHERE action = 'app.create' AND target = $1",
                &[&m.app.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(audits, 1, "{step}");
        let creds: i64 = p
            .client
            .query_one(
                "SELECT count(*) FROM bulkhead_control.credential WHERE app = $1",
                &[&m.app.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(creds, 2, "{step}");
        worker_login(cluster, dir.path(), &m, &boot)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        // And running it once more changes nothing.
        assert_eq!(p.create_app(&m, None).await.unwrap(), boot);
    }
    assert!(
        bulkhead_control::audit::verify(&p.client)
            .await
            .unwrap()
            .ok()
    );
}

#[tokio::test]
async fn rotation_puts_a_new_password_in_the_vault_and_the_old_one_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, cluster, vault) = platform(dir.path()).await;
    let m = manifest(&unique("r"));
    let boot = p.create_app(&m, None).await.unwrap();
    let old = {
        use bulkhead_vault::VaultAdmin;
        vault.get(&m.app, RUNTIME_PASSWORD).await.unwrap()
    };
    let live = worker_login(cluster, dir.path(), &m, &boot).await.unwrap();
    p.rotate_credentials(&m).await.unwrap();
    // An open connection keeps working; new logins need the new password.
    live.query_one("SELECT 1", &[]).await.unwrap();
    let cfg = cluster.config(
        &names::app_database(&m.app),
        &names::runtime_role(&m.app),
        old.expose(),
    );
    let err = bulkhead_testkit::connect(&cfg).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("28P01"));
    worker_login(cluster, dir.path(), &m, &boot).await.unwrap();
}

#[tokio::test]
async fn sql_injection_with_app_a_credentials_reads_nothing_of_app_b() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, cluster, _) = platform(dir.path()).await;
    let (a, b) = (manifest(&unique("a")), manifest(&unique("b")));
    let boot_a = p.create_app(&a, None).await.unwrap();
    let boot_b = p.create_app(&b, None).await.unwrap();
    // App B has data.
    let b_client = worker_login(cluster, dir.path(), &b, &boot_b)
        .await
        .unwrap();
    b_client
        .batch_execute("BEGIN; SELECT set_config('bulkhead.tenant_id', 'acme', true); INSERT INTO public.note (tenant_id, text) VALUES ('acme', 'b secret'); COMMIT;")
        .await
        .unwrap();
    // Arbitrary SQL as app A's runtime role.
    let evil = worker_login(cluster, dir.path(), &a, &boot_a)
        .await
        .unwrap();
    evil.batch_execute("SELECT set_config('bulkhead.tenant_id', 'acme', false)")
        .await
        .unwrap();
    let n: i64 = evil
        .query_one("SELECT count(*) FROM public.note", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "A's database has no B rows, whatever the setting");
    for sql in [
        format!("SET ROLE {}", names::runtime_role(&b.app)),
        format!("SET ROLE {}", names::owner_role(&a.app)),
        "SELECT rolpassword FROM pg_authid".to_owned(),
        "SELECT * FROM dblink('dbname=x', 'select 1') AS t(x int)".to_owned(),
        "CREATE TABLE public.x (y int)".to_owned(),
        "COPY public.note TO PROGRAM 'id'".to_owned(),
    ] {
        assert!(evil.batch_execute(&sql).await.is_err(), "{sql} must fail");
    }
    // Connecting to B's database with A's credentials is refused.
    let reader_a = EmbeddedReader::open(dir.path(), a.app.clone(), &boot_a).unwrap();
    let pw_a = reader_a.get(RUNTIME_PASSWORD).await.unwrap();
    let cfg = cluster.config(
        &names::app_database(&b.app),
        &names::runtime_role(&a.app),
        pw_a.expose(),
    );
    assert!(bulkhead_testkit::connect(&cfg).await.is_err());
    // And A's boot credential reads nothing of B's vault space.
    assert!(reader_a.get_of(&b.app, RUNTIME_PASSWORD).is_err());
}
