//! Provisioning through the control plane: crash-resume, rotation, and what an app's runtime
//! credentials can (not) reach even with arbitrary SQL.

use std::sync::Arc;

use bulkhead_control::platform::{APP_STEPS, FILES_S3, Platform, RUNTIME_PASSWORD};
use bulkhead_control::registry;
use bulkhead_model::{AppManifest, names};
use bulkhead_testkit::{TestCluster, pg, tokio_postgres};
use bulkhead_vault::embedded::EmbeddedReader;
use bulkhead_vault::{BootCredential, VaultReader};
use bulkhead_vault_admin::embedded::{EmbeddedAdmin, MasterKey};

pub(crate) fn manifest(app: &str) -> AppManifest {
    AppManifest::from_yaml(
        &format!("app: {app}\nentities:\n  note:\n    fields:\n      text: {{ type: text, required: true }}\ncross_tenant_reads: [note]\n"),
        "t.yaml",
    )
    .unwrap()
}

pub(crate) fn unique(prefix: &str) -> String {
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
    platform_with(vault_root, None).await
}

async fn platform_with(
    vault_root: &std::path::Path,
    buckets: Option<bulkhead_files::garage::GarageAdmin>,
) -> (Platform, &'static TestCluster, EmbeddedAdmin) {
    let cluster = pg().unwrap();
    let db = cluster.fresh_db().await.unwrap();
    let mut client = db.superuser().await.unwrap();
    bulkhead_control::migrate(&mut client).await.unwrap();
    let vault = EmbeddedAdmin::open(vault_root, MasterKey::generate()).unwrap();
    let platform = Platform {
        client,
        provisioner: bulkhead_fixtures::admin(cluster),
        vault: Arc::new(vault.clone()),
        buckets,
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
    let garage = bulkhead_testkit::garage::Garage::start().unwrap();
    let buckets = bulkhead_files::garage::GarageAdmin::new(
        &garage.admin_url(),
        bulkhead_model::Secret::new(garage.admin_token()),
        &garage.s3_endpoint(),
        bulkhead_testkit::garage::REGION,
    )
    .unwrap();
    let (mut p, cluster, _) = platform_with(dir.path(), Some(buckets)).await;
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
        assert_eq!(creds, 3, "{step}");
        worker_login(cluster, dir.path(), &m, &boot)
            .await
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        // The app's own bucket key, from its vault space, writes to its bucket.
        let reader = EmbeddedReader::open(dir.path(), m.app.clone(), &boot).unwrap();
        let bucket: bulkhead_files::S3Bucket =
            serde_json::from_str(reader.get(FILES_S3).await.unwrap().expose()).unwrap();
        bulkhead_files::AppBucket::s3(&m.app, &bucket)
            .unwrap()
            .tenant(&bulkhead_model::TenantId::parse("acme").unwrap())
            .put("probe.txt", bytes::Bytes::from_static(b"ok"), 16)
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
        use bulkhead_vault_admin::VaultAdmin;
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

async fn as_superuser(cluster: &TestCluster, db: &str) -> tokio_postgres::Client {
    bulkhead_testkit::connect(&cluster.config(db, "postgres", cluster.superuser_password()))
        .await
        .unwrap()
}

fn spec(id: &str, level: bulkhead_model::IsolationLevel) -> bulkhead_model::tenants::TenantSpec {
    bulkhead_model::tenants::TenantSpec {
        id: bulkhead_model::TenantId::parse(id).unwrap(),
        namespace: id.into(),
        isolation: level,
        identity: bulkhead_model::tenants::IdentitySpec::Local { realm: id.into() },
        network: Default::default(),
        residency: None,
        dedicated_worker: true,
        line: 0,
    }
}

/// A tenant moves between all three levels and keeps exactly its records, even when each
/// move is cut short after one of its steps and run again; the old level's data is gone and
/// the neighbour is untouched.
#[tokio::test]
async fn a_tenant_moves_between_levels_with_its_records_and_resumes_after_a_crash() {
    use bulkhead_control::platform::MOVE_STEPS;
    use bulkhead_model::IsolationLevel::{Database, Row, Schema};
    use bulkhead_model::TenantId;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, cluster, vault) = platform(dir.path()).await;
    let m = manifest(&unique("mv"));
    let boot = p.create_app(&m, None).await.unwrap();
    p.declare_tenant(&m, &spec("acme", Row)).await.unwrap();
    p.declare_tenant(&m, &spec("other", Row)).await.unwrap();
    let runtime = worker_login(cluster, dir.path(), &m, &boot).await.unwrap();
    runtime
        .batch_execute(
            "BEGIN; SELECT set_config('bulkhead.tenant_id', 'acme', true);
             INSERT INTO public.note (tenant_id, text) VALUES ('acme', 'one'), ('acme', 'two'), ('acme', 'three');
             SELECT set_config('bulkhead.tenant_id', 'other', true);
             INSERT INTO public.note (tenant_id, text) VALUES ('other', 'neighbour'); COMMIT;",
        )
        .await
        .unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let before = p.provisioner.export_tenant(&m, &acme, Row).await.unwrap();
    assert_eq!(before.len(), 3);
    let superuser = as_superuser(cluster, "postgres").await;
    let silo = names::tenant_database(&m.app, &acme);

    for ((from, to), crash) in [
        (Row, Schema),
        (Schema, Database),
        (Database, Row),
        (Row, Schema),
    ]
    .into_iter()
    .zip(MOVE_STEPS)
    {
        let quiesce = std::time::Duration::ZERO;
        let err = p
            .move_tenant(&m, &acme, to, quiesce, Some(crash))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        // Cut short: still registered at the old level, and suspended.
        let rec = registry::tenant(&p.client, &m.app, "acme")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (rec.isolation.as_str(), rec.status.as_str()),
            (from.as_str(), "suspended")
        );
        p.move_tenant(&m, &acme, to, quiesce, None).await.unwrap();
        let rec = registry::tenant(&p.client, &m.app, "acme")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (rec.isolation.as_str(), rec.status.as_str()),
            (to.as_str(), "active")
        );
        // The same records, ids and all, at the new level.
        let after = p.provisioner.export_tenant(&m, &acme, to).await.unwrap();
        assert_eq!(after, before, "{from:?} -> {to:?} after a crash at {crash}");
        // Nothing left at the old level.
        let shared_acme: i64 = as_superuser(cluster, &names::app_database(&m.app))
            .await
            .query_one(
                "SELECT count(*) FROM public.note WHERE tenant_id = 'acme'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(shared_acme == 0, to != Row, "{from:?} -> {to:?}");
        let schema_exists: bool = as_superuser(cluster, &names::app_database(&m.app))
            .await
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
                &[&names::tenant_schema(&acme)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(schema_exists, to == Schema, "{from:?} -> {to:?}");
        let silo_exists: bool = superuser
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                &[&silo],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(silo_exists, to == Database, "{from:?} -> {to:?}");
        // The tenant's role as a fresh provisioning at the new level leaves it: absent for
        // `row`, NOLOGIN and the runtime's to SET for `schema`, a login of its own for
        // `database` that the runtime role cannot become.
        let role = superuser
            .query_opt(
                "SELECT rolcanlogin, pg_has_role($2, oid, 'MEMBER') FROM pg_roles WHERE rolname = $1",
                &[&names::tenant_role(&m.app, &acme), &names::runtime_role(&m.app)],
            )
            .await
            .unwrap()
            .map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1)));
        let expected = match to {
            Row => None,
            Schema => Some((false, true)),
            Database => Some((true, false)),
        };
        assert_eq!(role, expected, "{from:?} -> {to:?}");
        {
            use bulkhead_vault_admin::VaultAdmin;
            // In the tenant's own worker's space at the database level, never the app's.
            let name = bulkhead_control::platform::tenant_password_path(&acme);
            let own = vault.get(&m.app.tenant_space(&acme), &name).await.is_ok();
            assert_eq!(own, to == Database, "{from:?} -> {to:?}");
            assert!(
                vault.get(&m.app, &name).await.is_err(),
                "{from:?} -> {to:?}"
            );
        }
    }
    // The neighbour never moved and kept its row.
    let other = TenantId::parse("other").unwrap();
    assert_eq!(
        p.provisioner
            .export_tenant(&m, &other, Row)
            .await
            .unwrap()
            .len(),
        1
    );
    let moves: i64 = p
        .client
        .query_one(
            "SELECT count(*) FROM bulkhead_control.audit_log WHERE action = 'tenant.move'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(moves, 4);
}

/// Flag overrides and settings are checked against the manifest (errors name the field), a
/// secret setting lands in the vault and never in the registry or the audit log, and the
/// app's worker configuration carries each tenant's own overrides only.
#[tokio::test]
async fn tenant_flags_and_settings_are_validated_and_secrets_stay_in_the_vault() {
    use bulkhead_control::platform::{WORKER_CONFIG, WorkerConfig, setting_secret_path};
    use bulkhead_model::IsolationLevel::Row;
    use bulkhead_model::TenantId;
    use bulkhead_model::options::FlagOverride;
    use bulkhead_vault_admin::VaultAdmin;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _, vault) = platform(dir.path()).await;
    let app = unique("opt");
    let m = AppManifest::from_yaml(
        &format!(
            "app: {app}\nentities:\n  note:\n    fields:\n      text: text\nflags:\n  beta_ui: {{ type: bool, default: false }}\nsettings:\n  smtp:\n    schema:\n      type: object\n      properties:\n        host: {{ type: string }}\n        port: {{ type: integer, minimum: 1, maximum: 65535 }}\n      required: [host]\n    default: {{ host: localhost, port: 25 }}\n  api_key: {{ schema: {{ type: string, minLength: 8 }}, secret: true }}\n"
        ),
        "m.yaml",
    )
    .unwrap();
    p.create_app(&m, None).await.unwrap();
    p.publish_worker_config(WorkerConfig {
        db_tls: Default::default(),
        db_more_hosts: Vec::new(),
        db_read_write: false,
        db_host: "127.0.0.1".into(),
        db_port: 5432,
        database: names::app_database(&m.app),
        runtime_role: names::runtime_role(&m.app),
        manifest: m.clone(),
        realm_base_url: "http://127.0.0.1".into(),
        tenants: vec![],
        domains: vec![],
        base_domains: vec![],
        files_root: None,
        bundle: None,
    })
    .await
    .unwrap();
    p.declare_tenant(&m, &spec("acme", Row)).await.unwrap();
    p.declare_tenant(&m, &spec("beta", Row)).await.unwrap();
    let acme = TenantId::parse("acme").unwrap();

    // Wrong types and values are refused with the field named.
    let err = p
        .set_tenant_setting(
            &m,
            &acme,
            "smtp",
            Some(&json!({"host": "mx", "port": 70000})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("settings.smtp.port"), "{err}");
    let err = p
        .set_tenant_setting(&m, &acme, "smtp", Some(&json!({"port": 25})))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("settings.smtp") && err.contains("host"),
        "{err}"
    );
    let err = p
        .set_tenant_setting(&m, &acme, "nope", Some(&json!(1)))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("settings.nope"), "{err}");
    let flag = FlagOverride {
        value: Some(json!("on")),
        ..FlagOverride::default()
    };
    let err = p
        .set_tenant_flag(&m, &acme, "beta_ui", Some(&flag))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("flags.beta_ui.value"), "{err}");

    // Valid changes: a flag, a setting, and a secret that goes to the vault only.
    let flag = FlagOverride {
        value: Some(json!(true)),
        ..FlagOverride::default()
    };
    p.set_tenant_flag(&m, &acme, "beta_ui", Some(&flag))
        .await
        .unwrap();
    p.set_tenant_setting(
        &m,
        &acme,
        "smtp",
        Some(&json!({"host": "mx.acme", "port": 587})),
    )
    .await
    .unwrap();
    p.set_tenant_setting(&m, &acme, "api_key", Some(&json!("s3cret-key-123")))
        .await
        .unwrap();
    let stored = vault
        .get(&m.app, &setting_secret_path(&acme, "api_key"))
        .await
        .unwrap();
    assert_eq!(stored.expose(), "\"s3cret-key-123\"");
    let registry_dump: String = p
        .client
        .query_one(
            "SELECT (SELECT string_agg(t::text, ' ') FROM bulkhead_control.tenant t) || (SELECT string_agg(a::text, ' ') FROM bulkhead_control.audit_log a)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !registry_dump.contains("s3cret-key-123"),
        "a secret in the registry or audit log"
    );
    assert!(registry_dump.contains("tenant.setting") && registry_dump.contains("tenant.flag"));

    // The workers' configuration: acme's overrides on acme only, the secret by name only.
    let config: WorkerConfig =
        serde_json::from_str(vault.get(&m.app, WORKER_CONFIG).await.unwrap().expose()).unwrap();
    let by_id = |id: &str| config.tenants.iter().find(|t| t.id.as_str() == id).unwrap();
    assert_eq!(by_id("acme").options.flags["beta_ui"], flag);
    assert_eq!(by_id("acme").options.settings["smtp"]["host"], "mx.acme");
    assert_eq!(by_id("acme").secret_settings, ["api_key"]);
    assert!(by_id("beta").options.flags.is_empty() && by_id("beta").options.settings.is_empty());
    assert!(
        !serde_json::to_string(&config)
            .unwrap()
            .contains("s3cret-key-123")
    );

    // Clearing goes back to the default, and removes the secret from the vault.
    p.set_tenant_setting(&m, &acme, "api_key", None)
        .await
        .unwrap();
    assert!(
        vault
            .get(&m.app, &setting_secret_path(&acme, "api_key"))
            .await
            .is_err()
    );
}

/// A bundle larger than one vault entry may hold (OpenBao's raft storage refuses entries
/// over 1 MiB by default) is written in pieces, each within the bound, and reads back whole.
#[tokio::test]
async fn a_large_bundle_is_kept_in_vault_entries_that_each_fit_raft() {
    use bulkhead_model::worker::{BUNDLE_PART_BYTES, BundleHead, bundle_path};
    use bulkhead_vault_admin::VaultAdmin;
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _, vault) = platform(dir.path()).await;
    let app = unique("b");
    let yaml = format!(
        "app: {app}\nentities:\n  note:\n    fields:\n      text: {{ type: text, required: true }}\ncross_tenant_reads: [note]\n"
    );
    let m = AppManifest::from_yaml(&yaml, "manifest.yaml").unwrap();
    p.create_app(&m, None).await.unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let bundle = bulkhead_model::bundle::Bundle::new(
        [
            ("manifest.yaml".to_owned(), yaml.into_bytes()),
            ("public/big.bin".to_owned(), big),
        ]
        .into(),
    )
    .unwrap();
    p.deploy_bundle(&bundle, &m).await.unwrap();
    let digest = bundle.digest();
    let head = vault.get(&m.app, &bundle_path(&digest)).await.unwrap();
    let parts = BundleHead::read(head.expose()).part_paths(&digest).unwrap();
    assert!(
        !parts.is_empty(),
        "a {} byte bundle kept in one entry",
        bundle.to_json().len()
    );
    let mut content = String::new();
    for path in parts {
        let part = vault.get(&m.app, &path).await.unwrap();
        assert!(part.expose().len() <= BUNDLE_PART_BYTES, "{path}");
        content.push_str(part.expose());
    }
    let back = bulkhead_model::bundle::Bundle::from_json(&content).unwrap();
    assert_eq!(back.digest(), digest);
}
