//! Moving a tenant between isolation levels: suspend, provision, copy, drop the old level.

use super::*;

/// The steps of [`Platform::move_tenant`], in order.
pub const MOVE_STEPS: &[&str] = &["suspend", "provision", "copy", "drop-old"];

impl Platform {
    /// Moves a tenant to another isolation level: suspends it (its app's workers refuse it
    /// within `quiesce`), provisions the new level, copies its records there (as the owner
    /// under forced RLS, checked by count), drops the old level's data, then records the new
    /// level and resumes it (unless it was suspended before). Each step is recorded: a run cut short is finished by running it
    /// again, and until the last step the registry still names the old level. Returns how many
    /// records were moved.
    pub async fn move_tenant(
        &mut self,
        manifest: &AppManifest,
        tenant: &TenantId,
        to: IsolationLevel,
        quiesce: std::time::Duration,
        crash_after: Option<&str>,
    ) -> Result<usize> {
        let app = &manifest.app;
        let record = registry::tenant(&self.client, app, tenant.as_str())
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant} of {app}")))?;
        let from: IsolationLevel = record.isolation;
        if from == to {
            return Ok(0);
        }
        let subject = format!("move/{app}/{tenant}/{}-{}", from.as_str(), to.as_str());
        let crash = |step: &str| -> Result<()> {
            if crash_after == Some(step) {
                Err(Error::Internal(format!("injected crash after step {step}")))
            } else {
                Ok(())
            }
        };
        let done = |step: &'static str| registry::step_done(&self.client, &subject, step);
        if !done("suspend").await? {
            // A tenant the operator had suspended stays suspended after the move.
            if record.status == registry::TenantStatus::Suspended {
                registry::mark_step(&self.client, &subject, "was-suspended").await?;
            }
            registry::set_status(&self.client, app, tenant, registry::TenantStatus::Suspended)
                .await?;
            self.sync_worker_config(app).await?;
            // Running workers re-read their configuration; no write may land in the old
            // place after the copy.
            tokio::time::sleep(quiesce).await;
            registry::mark_step(&self.client, &subject, "suspend").await?;
        }
        crash("suspend")?;
        if !done("provision").await? {
            self.ensure_tenant(manifest, tenant, to, record.dedicated_worker)
                .await?;
            registry::mark_step(&self.client, &subject, "provision").await?;
        }
        crash("provision")?;
        let mut moved = 0;
        if !done("copy").await? {
            let lines = self
                .provisioner
                .export_tenant(manifest, tenant, from)
                .await
                .map_err(pg)?;
            moved = self
                .provisioner
                .import_tenant(manifest, tenant, to, &lines)
                .await
                .map_err(pg)?;
            let copied = self
                .provisioner
                .export_tenant(manifest, tenant, to)
                .await
                .map_err(pg)?;
            if copied.len() != lines.len() {
                return Err(Error::Internal(format!(
                    "moving {tenant}: {} records read, {} found after the copy",
                    lines.len(),
                    copied.len()
                )));
            }
            registry::mark_step(&self.client, &subject, "copy").await?;
        }
        crash("copy")?;
        if !done("drop-old").await? {
            // `schema` and `database` share the tenant's role: a move between them keeps it.
            let keep_role = from != IsolationLevel::Row && to != IsolationLevel::Row;
            self.provisioner
                .drop_tenant_level(manifest, tenant, from, keep_role)
                .await
                .map_err(pg)?;
            if from == IsolationLevel::Database {
                self.vault
                    .delete(app, &tenant_password_path(tenant))
                    .await
                    .map_err(vault)?;
                self.vault
                    .delete_app(&app.tenant_space(tenant))
                    .await
                    .map_err(vault)?;
            }
            registry::mark_step(&self.client, &subject, "drop-old").await?;
        }
        crash("drop-old")?;
        // The last step: the registry names the new level and the tenant is served again.
        let status = if done("was-suspended").await? {
            registry::TenantStatus::Suspended
        } else {
            registry::TenantStatus::Active
        };
        registry::set_isolation(&self.client, app, tenant, to, status).await?;
        self.sync_worker_config(app).await?;
        registry::clear_steps(&self.client, &subject).await?;
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action: "tenant.move",
                target: &format!("{app}/{tenant}"),
                detail: json!({ "from": from.as_str(), "to": to.as_str(), "records": moved }),
            },
        )
        .await?;
        Ok(moved)
    }
}
