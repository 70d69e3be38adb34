//! An app with searchable entities, provisioned on the test cluster (the shared fixtures of
//! `bulkhead-fixtures`), and its indexes.

use std::collections::BTreeSet;
use std::path::Path;

use bulkhead_model::IsolationLevel;
use bulkhead_pg::{DataPlane, TenantContext};
use bulkhead_search::{SearchConfig, SearchIndexes, SearchRequest};
use serde_json::Value;

pub use bulkhead_fixtures::tid;

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

/// The knowledge-base app with `tenants`, and what the search tests ask of it.
pub struct App(pub bulkhead_fixtures::App);

impl std::ops::Deref for App {
    type Target = bulkhead_fixtures::App;
    fn deref(&self) -> &bulkhead_fixtures::App {
        &self.0
    }
}

impl App {
    pub async fn new(tenants: &[(&str, IsolationLevel)]) -> Self {
        Self(bulkhead_fixtures::App::new(KB, tenants).await)
    }

    /// A superuser connection to the app database, for setup only.
    pub async fn superuser(&self) -> bulkhead_testkit::tokio_postgres::Client {
        self.0.superuser(&self.0.app.database).await
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
