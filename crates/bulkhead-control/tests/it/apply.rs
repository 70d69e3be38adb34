//! `apply`'s batch declaration against a real PostgreSQL and the embedded vault: every tenant
//! provisioned at its level, registered and audited, the app's worker configuration published
//! once per run (not once per tenant), a run cut short before publishing finished by the next,
//! and a no-op migrate that skips current tenants while a real change still reaches each.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bulkhead_control::platform::{Platform, WORKER_CONFIG, WorkerConfig};
use bulkhead_control::reconcile::{Action, ApplyOptions, plan};
use bulkhead_control::registry;
use bulkhead_model::tenants::{IdentitySpec, TenantSpec};
use bulkhead_model::{AppId, AppManifest, IsolationLevel, TenantId, names};
use bulkhead_testkit::{TestCluster, pg};
use bulkhead_vault::{BootCredential, BoxFuture, Secret};
use bulkhead_vault_admin::VaultAdmin;
use bulkhead_vault_admin::embedded::{EmbeddedAdmin, MasterKey};

use super::platform::{manifest, unique};

/// The real embedded vault, counting writes of the worker configuration into one space and
/// able to refuse them (a vault outage at the end of a run).
struct Observed {
    inner: EmbeddedAdmin,
    space: std::sync::Mutex<Option<AppId>>,
    config_writes: AtomicUsize,
    refuse_config: AtomicBool,
}

impl Observed {
    fn watching(&self, app: &AppId) {
        *self.space.lock().unwrap() = Some(app.clone());
        self.config_writes.store(0, Ordering::SeqCst);
    }

    fn writes(&self) -> usize {
        self.config_writes.load(Ordering::SeqCst)
    }
}

impl VaultAdmin for Observed {
    fn create_app<'a>(
        &'a self,
        app: &'a AppId,
    ) -> BoxFuture<'a, bulkhead_vault::Result<BootCredential>> {
        self.inner.create_app(app)
    }

    fn boot_credential<'a>(
        &'a self,
        app: &'a AppId,
    ) -> BoxFuture<'a, bulkhead_vault::Result<BootCredential>> {
        self.inner.boot_credential(app)
    }

    fn put<'a>(
        &'a self,
        app: &'a AppId,
        name: &'a str,
        value: &'a Secret,
    ) -> BoxFuture<'a, bulkhead_vault::Result<()>> {
        let watched = self.space.lock().unwrap().as_ref() == Some(app);
        if name == WORKER_CONFIG && watched {
            if self.refuse_config.load(Ordering::SeqCst) {
                return Box::pin(async {
                    Err(bulkhead_vault::Error::Unavailable(
                        "refused by the test".into(),
                    ))
                });
            }
            self.config_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.put(app, name, value)
    }

    fn get<'a>(
        &'a self,
        app: &'a AppId,
        name: &'a str,
    ) -> BoxFuture<'a, bulkhead_vault::Result<Secret>> {
        self.inner.get(app, name)
    }

    fn delete<'a>(
        &'a self,
        app: &'a AppId,
        name: &'a str,
    ) -> BoxFuture<'a, bulkhead_vault::Result<()>> {
        self.inner.delete(app, name)
    }

    fn delete_app<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, bulkhead_vault::Result<()>> {
        self.inner.delete_app(app)
    }
}

async fn platform(dir: &std::path::Path) -> (Platform, Arc<Observed>, &'static TestCluster) {
    let cluster = pg().unwrap();
    let db = cluster.fresh_db().await.unwrap();
    let mut client = db.superuser().await.unwrap();
    bulkhead_control::migrate(&mut client).await.unwrap();
    let vault = Arc::new(Observed {
        inner: EmbeddedAdmin::open(dir, MasterKey::generate()).unwrap(),
        space: Default::default(),
        config_writes: AtomicUsize::new(0),
        refuse_config: AtomicBool::new(false),
    });
    let platform = Platform {
        client,
        provisioner: bulkhead_fixtures::admin(cluster),
        vault: vault.clone(),
        buckets: None,
        actor: "test".into(),
    };
    (platform, vault, cluster)
}

/// The app registered with its worker configuration published, as a running server has it.
async fn app_with_workers(p: &mut Platform, m: &AppManifest) {
    p.create_app(m, None).await.unwrap();
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
}

fn specs(levels: &[(usize, IsolationLevel)]) -> Vec<TenantSpec> {
    let mut out = Vec::new();
    for &(count, level) in levels {
        for _ in 0..count {
            let id = format!("{}{}", &level.as_str()[..1], out.len());
            out.push(TenantSpec {
                id: TenantId::parse(&id).unwrap(),
                namespace: id.clone(),
                isolation: level,
                identity: IdentitySpec::Local { realm: id },
                network: Default::default(),
                residency: None,
                dedicated_worker: false,
                line: out.len() + 1,
            });
        }
    }
    out
}

async fn apply(
    p: &mut Platform,
    m: &AppManifest,
    specs: &[TenantSpec],
) -> Result<Vec<bulkhead_control::reconcile::Applied>, bulkhead_control::reconcile::ApplyError> {
    let known = registry::tenants(&p.client, &m.app).await.unwrap();
    let steps = plan(&[(m.app.to_string(), known)], specs, false);
    let options = ApplyOptions {
        quiesce: std::time::Duration::ZERO,
        realms: None,
        now: 0,
        parallel: 4,
    };
    p.apply_plan(std::slice::from_ref(m), specs, &steps, &options, |_, _| {})
        .await
}

/// The tenant ids the app's workers are told about.
async fn published(vault: &Observed, app: &AppId) -> Vec<String> {
    let raw = vault.inner.get(app, WORKER_CONFIG).await.unwrap();
    let config: WorkerConfig = serde_json::from_str(raw.expose()).unwrap();
    let mut ids: Vec<String> = config.tenants.iter().map(|t| t.id.to_string()).collect();
    ids.sort();
    ids
}

/// How many tenant creations of `app` the audit log holds.
async fn audited(p: &Platform, app: &AppId) -> i64 {
    p.client
        .query_one(
            "SELECT count(*) FROM bulkhead_control.audit_log
             WHERE action = 'tenant.create' AND target LIKE $1",
            &[&format!("{app}/%")],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn apply_declares_many_tenants_with_one_worker_configuration_publication() {
    use IsolationLevel::{Database, Row, Schema};
    let dir = tempfile::tempdir().unwrap();
    let (mut p, vault, cluster) = platform(dir.path()).await;
    let m = manifest(&unique("ap"));
    app_with_workers(&mut p, &m).await;
    vault.watching(&m.app);
    let specs = specs(&[(8, Row), (10, Schema), (2, Database)]);

    let done = apply(&mut p, &m, &specs).await.unwrap();
    assert_eq!(done.len(), 20);
    // One publication for the twenty (one per tenant would be twenty, each listing them all).
    assert_eq!(vault.writes(), 1);
    let mut ids: Vec<String> = specs.iter().map(|s| s.id.to_string()).collect();
    ids.sort();
    assert_eq!(published(&vault, &m.app).await, ids);
    assert_eq!(
        registry::tenants(&p.client, &m.app).await.unwrap().len(),
        20
    );
    // Each provisioned at its level: the schemas in the app database, the databases.
    let admin = bulkhead_testkit::connect(&cluster.config(
        &names::app_database(&m.app),
        "postgres",
        cluster.superuser_password(),
    ))
    .await
    .unwrap();
    for spec in &specs {
        let schema = admin
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&names::tenant_schema(&spec.id)],
            )
            .await
            .unwrap()
            .is_some();
        let database = admin
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&names::tenant_database(&m.app, &spec.id)],
            )
            .await
            .unwrap()
            .is_some();
        assert_eq!(
            (schema, database),
            (spec.isolation == Schema, spec.isolation == Database),
            "{}",
            spec.id
        );
    }
    assert_eq!(audited(&p, &m.app).await, 20);

    // Again: nothing to do, nothing written, nothing audited.
    let known = registry::tenants(&p.client, &m.app).await.unwrap();
    let steps = plan(&[(m.app.to_string(), known)], &specs, false);
    assert!(steps.iter().all(|s| s.action == Action::NoChange));
    assert!(apply(&mut p, &m, &specs).await.unwrap().is_empty());
    assert_eq!(vault.writes(), 1);
    assert_eq!(audited(&p, &m.app).await, 20);
}

#[tokio::test]
async fn apply_cut_short_before_publishing_is_finished_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let (mut p, vault, _) = platform(dir.path()).await;
    let m = manifest(&unique("cut"));
    app_with_workers(&mut p, &m).await;
    vault.watching(&m.app);
    let specs = specs(&[(5, IsolationLevel::Row)]);

    vault.refuse_config.store(true, Ordering::SeqCst);
    let err = apply(&mut p, &m, &specs).await.unwrap_err();
    assert!(err.what.contains("worker configuration"), "{err}");
    assert_eq!(
        err.done.len(),
        5,
        "registered before the publication failed"
    );
    assert!(published(&vault, &m.app).await.is_empty());

    // The next run has no step to take, and still publishes what the registry holds.
    vault.refuse_config.store(false, Ordering::SeqCst);
    assert!(apply(&mut p, &m, &specs).await.unwrap().is_empty());
    assert_eq!(published(&vault, &m.app).await.len(), 5);
}

#[tokio::test]
async fn a_noop_migrate_skips_current_tenants_and_a_change_still_reaches_each() {
    use IsolationLevel::{Database, Schema};
    let dir = tempfile::tempdir().unwrap();
    let (mut p, _, cluster) = platform(dir.path()).await;
    let app = unique("mig");
    let m = manifest(&app);
    app_with_workers(&mut p, &m).await;
    let specs = specs(&[(4, Schema), (1, Database)]);
    apply(&mut p, &m, &specs).await.unwrap();

    let versions = |run: &bulkhead_control::platform::MigrationRun| -> Vec<(i32, usize)> {
        let mut v: Vec<(i32, usize)> = run
            .tenants
            .iter()
            .map(|(t, r)| {
                let r = r.as_ref().unwrap_or_else(|e| panic!("{t}: {e}"));
                (r.version, r.plan.steps.len())
            })
            .collect();
        v.sort();
        v
    };
    let run = p.migrate_all(&m, false, 4, |_, _| {}).await.unwrap();
    assert_eq!(versions(&run), vec![(1, 0); 5]);

    // A changed manifest is not "current": every tenant gets the new field.
    let v2 = AppManifest::from_yaml(
        &format!(
            "app: {app}\nentities:\n  note:\n    fields:\n      text: {{ type: text, required: true }}\n      tag: text\ncross_tenant_reads: [note]\n"
        ),
        "v2.yaml",
    )
    .unwrap();
    let run = p.migrate_all(&v2, false, 4, |_, _| {}).await.unwrap();
    assert_eq!(versions(&run), vec![(2, 1); 5]);
    let run = p.migrate_all(&v2, false, 4, |_, _| {}).await.unwrap();
    assert_eq!(versions(&run), vec![(2, 0); 5]);
    let admin = bulkhead_testkit::connect(&cluster.config(
        &names::app_database(&m.app),
        "postgres",
        cluster.superuser_password(),
    ))
    .await
    .unwrap();
    for spec in specs.iter().filter(|s| s.isolation == Schema) {
        let has_tag = admin
            .query_opt(
                "SELECT 1 FROM information_schema.columns
                 WHERE table_schema = $1 AND table_name = 'note' AND column_name = 'tag'",
                &[&names::tenant_schema(&spec.id)],
            )
            .await
            .unwrap()
            .is_some();
        assert!(has_tag, "{}", spec.id);
    }
}
