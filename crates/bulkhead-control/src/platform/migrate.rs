//! Migrate-all: the shared schema, then every schema and database tenant.

use super::*;

/// One run of migrate-all: the shared schema's report, then each schema and database tenant's.
#[derive(Debug)]
pub struct MigrationRun {
    pub shared: bulkhead_pg::migrate::MigrationReport,
    /// Per tenant: its report, or why it failed (the others went on).
    pub tenants: Vec<(
        String,
        std::result::Result<bulkhead_pg::migrate::MigrationReport, String>,
    )>,
}

impl MigrationRun {
    pub fn failed(&self) -> usize {
        self.tenants.iter().filter(|(_, r)| r.is_err()).count()
    }
}

impl Platform {
    /// Migrates the app's shared schema to `m`, then every schema and database tenant,
    /// `parallel` at a time (a failed tenant does not stop the others; running it again retries
    /// them), records the manifest and audits the run. `progress(total, done)` reports each
    /// finished tenant.
    pub async fn migrate_all(
        &mut self,
        m: &AppManifest,
        allow_destructive: bool,
        parallel: usize,
        progress: impl Fn(usize, Option<&str>) + Sync,
    ) -> Result<MigrationRun> {
        use bulkhead_pg::provision::MigrationTarget;
        use futures_util::StreamExt;
        let shared = self
            .provisioner
            .migrate_one(m, &MigrationTarget::Shared, allow_destructive)
            .await
            .map_err(|e| match e {
                bulkhead_pg::Error::DestructiveChange(d) => Error::Conflict(format!(
                    "the migration has destructive steps ({d}); re-run with the destructive flag"
                )),
                e => Error::Internal(format!(
                    "migrating the shared schema (tenants were not touched): {e}"
                )),
            })?;
        let tenants: Vec<(TenantId, IsolationLevel)> = registry::tenants(&self.client, &m.app)
            .await?
            .into_iter()
            .map(|t| (t.id, t.isolation))
            .filter(|(_, level)| *level != IsolationLevel::Row)
            .collect();
        // Schema tenants already at `m` are read in a few statements and skipped.
        let schema_tenants: Vec<TenantId> = tenants
            .iter()
            .filter(|(_, level)| *level == IsolationLevel::Schema)
            .map(|(t, _)| t.clone())
            .collect();
        let current = if schema_tenants.is_empty() {
            Default::default()
        } else {
            self.provisioner
                .current_schemas(m, &schema_tenants)
                .await
                .map_err(pg)?
        };
        progress(tenants.len(), None);
        let prov = &self.provisioner;
        let current = &current;
        let progress = &progress;
        let total = tenants.len();
        let results: Vec<(
            String,
            std::result::Result<bulkhead_pg::migrate::MigrationReport, String>,
        )> = futures_util::stream::iter(tenants.iter().cloned())
            .map(|(t, level)| async move {
                if let Some(&version) = current.get(&t) {
                    progress(total, Some(t.as_str()));
                    let report = bulkhead_pg::migrate::MigrationReport {
                        target: bulkhead_pg::ddl::Target::TenantSchema(t.clone()).describe(),
                        version,
                        plan: bulkhead_pg::migrate::Plan { steps: Vec::new() },
                    };
                    return (t.to_string(), Ok(report));
                }
                let r = prov
                    .migrate_one(
                        m,
                        &MigrationTarget::Tenant(t.clone(), level),
                        allow_destructive,
                    )
                    .await
                    .map_err(|e| e.to_string());
                progress(total, Some(t.as_str()));
                (t.to_string(), r)
            })
            .buffer_unordered(parallel.max(1))
            .collect()
            .await;
        let run = MigrationRun {
            shared,
            tenants: results,
        };
        registry::upsert_app(&self.client, &m.app, &to_json(m)?).await?;
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action: "app.migrate",
                target: m.app.as_str(),
                detail: json!({"shared_version": run.shared.version, "tenants": run.tenants.len(), "failed": run.failed()}),
            },
        )
        .await?;
        Ok(run)
    }
}
