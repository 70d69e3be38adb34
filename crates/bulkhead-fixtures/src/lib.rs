//! Shared test setup for the crates above the data layer: an app provisioned on the test
//! cluster (`bulkhead-testkit`: real PostgreSQL, password auth) with tenants at any level, its
//! data plane as the real runtime role, and contexts for users and roles. A dev-dependency
//! only: never linked into a process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};

use bulkhead_model::{AppManifest, IsolationLevel, TenantId, names};
use bulkhead_pg::{
    Actor, AppProvision, DataPlane, DataPlaneConfig, PoolSettings, Provisioner, Secret,
    TenantContext, TenantPlacement,
};
use bulkhead_testkit::{TestCluster, pg, tokio_postgres};

static NEXT_APP: AtomicU32 = AtomicU32::new(1);

/// A unique app id per test (roles are cluster-wide; one test process shares one cluster).
pub fn app_id() -> String {
    format!(
        "a{}x{}",
        std::process::id(),
        NEXT_APP.fetch_add(1, Ordering::Relaxed)
    )
}

/// A manifest whose `app:` is `APP`, with `app` in its place.
pub fn manifest(yaml: &str, app: &str) -> AppManifest {
    AppManifest::from_yaml(&yaml.replace("APP", app), "test.yaml").unwrap()
}

/// The cluster's provisioner (superuser: setup only, never for what a test asserts).
pub fn admin(cluster: &TestCluster) -> Provisioner {
    Provisioner::new(
        bulkhead_pg::PgConfig::local(cluster.config(
            "postgres",
            "postgres",
            cluster.superuser_password(),
        ))
        .unwrap(),
    )
}

pub fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub const ALL_LEVELS: [IsolationLevel; 3] = [
    IsolationLevel::Row,
    IsolationLevel::Schema,
    IsolationLevel::Database,
];

/// A provisioned app and its tenants.
pub struct App {
    pub cluster: &'static TestCluster,
    pub manifest: AppManifest,
    pub prov: Provisioner,
    pub app: AppProvision,
    pub plane: DataPlane,
    pub tenants: Vec<(TenantId, IsolationLevel)>,
    pub tenant_passwords: Vec<(TenantId, Secret)>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("app", &self.manifest.app)
            .field("tenants", &self.tenants)
            .finish_non_exhaustive()
    }
}

impl App {
    pub async fn new(yaml: &str, tenants: &[(&str, IsolationLevel)]) -> Self {
        Self::with_pools(yaml, tenants, PoolSettings::default()).await
    }

    pub async fn with_pools(
        yaml: &str,
        tenants: &[(&str, IsolationLevel)],
        pools: PoolSettings,
    ) -> Self {
        let cluster = pg().unwrap();
        let manifest = manifest(yaml, &app_id());
        let prov = admin(cluster);
        let app = prov.ensure_app(&manifest).await.unwrap();
        let plane = plane_of(cluster, &manifest, &app, pools);
        let mut out = Self {
            cluster,
            manifest,
            prov,
            app,
            plane,
            tenants: Vec::new(),
            tenant_passwords: Vec::new(),
        };
        for (t, level) in tenants {
            out.add_tenant(t, *level).await;
        }
        out
    }

    pub async fn add_tenant(&mut self, tenant: &str, level: IsolationLevel) {
        let t = tid(tenant);
        let done = self
            .prov
            .ensure_tenant(&self.manifest, &t, level)
            .await
            .unwrap();
        let password = done.database.and_then(|(_, cred)| cred.password);
        if let Some(p) = &password {
            self.tenant_passwords.push((t.clone(), p.clone()));
        }
        self.plane.register_tenant(TenantPlacement {
            tenant: t.clone(),
            level,
            database_password: password,
            suspended: false,
        });
        self.tenants.push((t, level));
    }

    /// Another data plane on this app (another worker's: its own pools and tenant table),
    /// for `manifest` (e.g. the next version), with no tenant registered.
    pub fn plane_for(&self, manifest: AppManifest, pools: PoolSettings) -> DataPlane {
        plane_of(self.cluster, &manifest, &self.app, pools)
    }

    /// Registers every tenant of this app in `plane`.
    pub fn register_all(&self, plane: &DataPlane) {
        for (t, level) in &self.tenants {
            plane.register_tenant(TenantPlacement {
                tenant: t.clone(),
                level: *level,
                database_password: self
                    .tenant_passwords
                    .iter()
                    .find(|(x, _)| x == t)
                    .map(|(_, p)| p.clone()),
                suspended: false,
            });
        }
    }

    /// Another worker's data plane on the same app and tenants.
    pub fn second_plane(&self) -> DataPlane {
        let p = self.plane_for(self.manifest.clone(), PoolSettings::default());
        self.register_all(&p);
        p
    }

    /// A context in `tenant` for its user `user-of-<tenant>`, without roles.
    pub fn ctx(&self, tenant: &str) -> TenantContext {
        self.plane
            .context(
                &tid(tenant),
                Actor {
                    user_id: Some(format!("user-of-{tenant}")),
                    request_id: Some("req-1".into()),
                    roles: Vec::new(),
                },
            )
            .unwrap()
    }

    /// A context for `user` with `roles` in `tenant`.
    pub fn ctx_as(&self, tenant: &str, user: &str, roles: &[&str]) -> TenantContext {
        self.plane
            .context(
                &tid(tenant),
                Actor {
                    user_id: Some(user.to_owned()),
                    request_id: None,
                    roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                },
            )
            .unwrap()
    }

    /// A context for `agent-of-<tenant>` with the `agent` role.
    pub fn agent(&self, tenant: &str) -> TenantContext {
        self.ctx_as(tenant, &format!("agent-of-{tenant}"), &["agent"])
    }

    pub fn app_name(&self) -> &str {
        self.manifest.app.as_str()
    }

    pub fn runtime_password(&self) -> &str {
        self.app.runtime.password.as_ref().unwrap().expose()
    }

    /// A raw connection to the app database as the runtime role (what an SQL injection gets).
    pub async fn raw_runtime(&self) -> tokio_postgres::Client {
        let cfg = self.cluster.config(
            &self.app.database,
            &self.app.runtime.role,
            self.runtime_password(),
        );
        bulkhead_testkit::connect(&cfg).await.unwrap()
    }

    pub async fn raw_cross(&self) -> tokio_postgres::Client {
        let c = self.app.cross_tenant.as_ref().unwrap();
        let cfg = self.cluster.config(
            &self.app.database,
            &c.role,
            c.password.as_ref().unwrap().expose(),
        );
        bulkhead_testkit::connect(&cfg).await.unwrap()
    }

    /// A superuser connection to `database`, for setup and inspection only.
    pub async fn superuser(&self, database: &str) -> tokio_postgres::Client {
        let cfg = self
            .cluster
            .config(database, "postgres", self.cluster.superuser_password());
        bulkhead_testkit::connect(&cfg).await.unwrap()
    }

    pub fn tenant_db(&self, tenant: &str) -> String {
        names::tenant_database(&self.manifest.app, &tid(tenant))
    }

    pub fn tenant_password(&self, tenant: &str) -> String {
        self.tenant_passwords
            .iter()
            .find(|(t, _)| t.as_str() == tenant)
            .map(|(_, p)| p.expose().to_owned())
            .unwrap()
    }
}

/// The app's data plane as its runtime role (and cross-tenant role, when it has one).
fn plane_of(
    cluster: &TestCluster,
    manifest: &AppManifest,
    app: &AppProvision,
    pools: PoolSettings,
) -> DataPlane {
    DataPlane::new(
        manifest.clone(),
        DataPlaneConfig {
            host: "127.0.0.1".into(),
            port: cluster.port(),
            app_database: app.database.clone(),
            runtime_role: app.runtime.role.clone(),
            runtime_password: app.runtime.password.clone().unwrap(),
            cross_tenant: app
                .cross_tenant
                .as_ref()
                .map(|c| (c.role.clone(), c.password.clone().unwrap())),
            pools,
            tls: Default::default(),
            reach: Default::default(),
        },
    )
    .unwrap()
}
