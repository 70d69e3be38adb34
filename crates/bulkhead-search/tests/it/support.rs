//! An app with searchable entities, provisioned on the test cluster, and its indexes.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use bulkhead_model::{AppManifest, IsolationLevel, TenantId};
use bulkhead_pg::{
    Actor, AppProvision, DataPlane, DataPlaneConfig, PoolSettings, Provisioner, Secret,
    TenantContext, TenantPlacement,
};
use bulkhead_search::{SearchConfig, SearchIndexes, SearchRequest};
use bulkhead_testkit::{TestCluster, pg};
use serde_json::Value;

pub const KB: &str = r#"app: APP
entities:
  article:
    fields:
      title: { type: text, required: true, search: true }
      body: { type: text, search: true }
      views: { type: int, default: 0 }
    permissions:
      agent: { read: all, create: all, update: all, delete: all }
      customer: { read: all }
  ticket:
    owner: reporter
    fields:
      title: { type: text, required: true, search: true }
      internal_note: { type: text, search: true }
      status: { type: enum, values: [open, closed], default: open, search: true }
    permissions:
      agent: { read: all, create: all, update: all, delete: all }
      customer: { read: own, create: all, update: own, hidden: [internal_note] }
  label:
    fields:
      name: { type: text, required: true }
"#;

static NEXT_APP: AtomicU32 = AtomicU32::new(1);

pub fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

pub struct App {
    pub cluster: &'static TestCluster,
    pub manifest: AppManifest,
    pub prov: Provisioner,
    pub app: AppProvision,
    pub plane: DataPlane,
    pub levels: Vec<(TenantId, IsolationLevel, Option<Secret>)>,
}

impl App {
    pub async fn new(tenants: &[(&str, IsolationLevel)]) -> Self {
        let cluster = pg().unwrap();
        let app = format!(
            "s{}x{}",
            std::process::id(),
            NEXT_APP.fetch_add(1, Ordering::Relaxed)
        );
        let manifest = AppManifest::from_yaml(&KB.replace("APP", &app), "kb.yaml").unwrap();
        let prov =
            Provisioner::new(cluster.config("postgres", "postgres", cluster.superuser_password()));
        let provisioned = prov.ensure_app(&manifest).await.unwrap();
        let plane = plane(cluster, &manifest, &provisioned);
        let mut out = Self {
            cluster,
            manifest,
            prov,
            app: provisioned,
            plane,
            levels: Vec::new(),
        };
        for (t, level) in tenants {
            let done = out
                .prov
                .ensure_tenant(&out.manifest, &tid(t), *level)
                .await
                .unwrap();
            let password = done.database.and_then(|(_, c)| c.password);
            out.levels.push((tid(t), *level, password));
        }
        register(&out.plane, &out.levels);
        out
    }

    /// Another worker's data plane on the same app (its own pools and tenant table).
    pub fn second_plane(&self) -> DataPlane {
        let p = plane(self.cluster, &self.manifest, &self.app);
        register(&p, &self.levels);
        p
    }

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

    pub fn agent(&self, tenant: &str) -> TenantContext {
        self.ctx_as(tenant, &format!("agent-of-{tenant}"), &["agent"])
    }

    /// A superuser connection to the app database, for setup only.
    pub async fn superuser(&self) -> bulkhead_testkit::tokio_postgres::Client {
        bulkhead_testkit::connect(&self.cluster.config(
            &self.app.database,
            "postgres",
            self.cluster.superuser_password(),
        ))
        .await
        .unwrap()
    }

    pub fn indexes(&self, dir: &Path) -> SearchIndexes {
        indexes_for(self.plane.clone(), dir)
    }

    /// The rows of `entity` in `tenant` as the database has them (agent's view).
    pub async fn db_ids(&self, tenant: &str, entity: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let ctx = self.agent(tenant);
        let mut cursor: Option<String> = None;
        loop {
            let mut q = ctx.db().query(entity).limit(1000);
            if let Some(c) = &cursor {
                q = q.after(c);
            }
            let page = q.fetch().await.unwrap();
            out.extend(
                page.records
                    .iter()
                    .map(|r| r["id"].as_str().unwrap().to_owned()),
            );
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }
}

pub fn indexes_for(plane: DataPlane, dir: &Path) -> SearchIndexes {
    SearchIndexes::new(
        plane,
        SearchConfig {
            dir: dir.to_owned(),
            poll_millis: 50,
            ..SearchConfig::default()
        },
    )
}

fn plane(cluster: &TestCluster, m: &AppManifest, app: &AppProvision) -> DataPlane {
    DataPlane::new(
        m.clone(),
        DataPlaneConfig {
            host: "127.0.0.1".into(),
            port: cluster.port(),
            app_database: app.database.clone(),
            runtime_role: app.runtime.role.clone(),
            runtime_password: app.runtime.password.clone().unwrap(),
            cross_tenant: None,
            pools: PoolSettings::default(),
        },
    )
    .unwrap()
}

fn register(plane: &DataPlane, levels: &[(TenantId, IsolationLevel, Option<Secret>)]) {
    for (t, level, password) in levels {
        plane.register_tenant(TenantPlacement {
            tenant: t.clone(),
            level: *level,
            database_password: password.clone(),
            suspended: false,
        });
    }
}

pub fn req(q: &str) -> SearchRequest {
    SearchRequest {
        q: q.to_owned(),
        limit: Some(100),
        ..SearchRequest::default()
    }
}

/// `(entity, id)` of every hit of `q` for `ctx`, across pages.
pub async fn hits(idx: &SearchIndexes, ctx: &TenantContext, q: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut r = req(q);
    loop {
        let page = idx.search(ctx, &r).await.unwrap();
        out.extend(page.hits.iter().map(|h| (h.entity.clone(), h.id.clone())));
        match page.next_cursor {
            Some(c) => r.cursor = Some(c),
            None => return out,
        }
    }
}

pub fn title(v: &Value) -> &str {
    v["title"].as_str().unwrap()
}
