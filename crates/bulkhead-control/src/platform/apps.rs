//! Creating apps (resumable, every step recorded) and the worker's view of a tenant record.

use super::*;

impl Platform {
    /// Creates (or finishes creating) an app: registry entry, database and roles, passwords in
    /// the vault, credential locations. Returns the app's boot credential. `crash_after`
    /// injects a failure right after the named step (tests of resumability).
    pub async fn create_app(
        &mut self,
        manifest: &AppManifest,
        crash_after: Option<&str>,
    ) -> Result<BootCredential> {
        let subject = format!("app/{}", manifest.app);
        let crash = |step: &str| -> Result<()> {
            if crash_after == Some(step) {
                Err(Error::Internal(format!("injected crash after step {step}")))
            } else {
                Ok(())
            }
        };
        let app = &manifest.app;
        if !registry::step_done(&self.client, &subject, "register").await? {
            let value =
                serde_json::to_value(manifest).map_err(|e| Error::Internal(e.to_string()))?;
            registry::upsert_app(&self.client, app, &value).await?;
            registry::mark_step(&self.client, &subject, "register").await?;
        }
        crash("register")?;
        // Passwords generated now but not yet in the vault are lost with a crash; the vault
        // step then sets new ones, so nothing depends on them surviving.
        let mut fresh = (None, None);
        if !registry::step_done(&self.client, &subject, "database").await? {
            let done = self.provisioner.ensure_app(manifest).await.map_err(pg)?;
            fresh = (
                done.runtime.password,
                done.cross_tenant.and_then(|c| c.password),
            );
            registry::mark_step(&self.client, &subject, "database").await?;
        }
        crash("database")?;
        let boot = self.vault.create_app(app).await.map_err(vault)?;
        if !registry::step_done(&self.client, &subject, "vault").await? {
            let runtime = self
                .fresh_or_rotated(fresh.0, &names::runtime_role(app))
                .await?;
            self.vault
                .put(app, RUNTIME_PASSWORD, &runtime)
                .await
                .map_err(vault)?;
            if !manifest.cross_tenant_reads.is_empty() {
                let cross = self
                    .fresh_or_rotated(fresh.1, &names::cross_tenant_role(app))
                    .await?;
                self.vault
                    .put(app, CROSS_TENANT_PASSWORD, &cross)
                    .await
                    .map_err(vault)?;
            }
            registry::mark_step(&self.client, &subject, "vault").await?;
        }
        crash("vault")?;
        if !registry::step_done(&self.client, &subject, "bucket").await? {
            // The app's own bucket and key; the key goes to the app's vault space only.
            if let Some(buckets) = &self.buckets {
                let bucket = buckets
                    .ensure_app_bucket(app)
                    .await
                    .map_err(|e| Error::Internal(format!("bucket: {e}")))?;
                let json =
                    serde_json::to_string(&bucket).map_err(|e| Error::Internal(e.to_string()))?;
                self.vault
                    .put(app, FILES_S3, &VaultSecret::new(json))
                    .await
                    .map_err(vault)?;
            }
            registry::mark_step(&self.client, &subject, "bucket").await?;
        }
        crash("bucket")?;
        if !registry::step_done(&self.client, &subject, "credentials").await? {
            registry::record_credential(
                &self.client,
                app,
                None,
                "runtime",
                &format!("apps/{app}/{RUNTIME_PASSWORD}"),
            )
            .await?;
            if !manifest.cross_tenant_reads.is_empty() {
                registry::record_credential(
                    &self.client,
                    app,
                    None,
                    "cross-tenant",
                    &format!("apps/{app}/{CROSS_TENANT_PASSWORD}"),
                )
                .await?;
            }
            if self.buckets.is_some() {
                registry::record_credential(
                    &self.client,
                    app,
                    None,
                    "bucket",
                    &format!("apps/{app}/{FILES_S3}"),
                )
                .await?;
            }
            registry::mark_step(&self.client, &subject, "credentials").await?;
            audit::append(
                &mut self.client,
                &Entry {
                    actor: &self.actor,
                    action: "app.create",
                    target: app.as_str(),
                    detail: json!({ "database": names::app_database(app), "steps": APP_STEPS }),
                },
            )
            .await?;
        }
        crash("credentials")?;
        Ok(boot)
    }

    /// The password just generated for `role`, or — when it was lost with a crash — a new one
    /// set now.
    async fn fresh_or_rotated(
        &self,
        fresh: Option<VaultSecret>,
        role: &str,
    ) -> Result<VaultSecret> {
        match fresh {
            Some(p) => Ok(p),
            None => self.provisioner.rotate_password(role).await.map_err(pg),
        }
    }

    /// Sets a new runtime password, stores it in the vault, and audits it. The old password
    /// stops working at once; a worker that fails to authenticate re-reads the vault.
    pub async fn rotate_credentials(&mut self, manifest: &AppManifest) -> Result<()> {
        let app = &manifest.app;
        let password = self
            .provisioner
            .rotate_password(&names::runtime_role(app))
            .await
            .map_err(pg)?;
        self.vault
            .put(app, RUNTIME_PASSWORD, &password)
            .await
            .map_err(vault)?;
        registry::record_credential(
            &self.client,
            app,
            None,
            "runtime",
            &format!("apps/{app}/{RUNTIME_PASSWORD}"),
        )
        .await?;
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action: "app.rotate-credentials",
                target: app.as_str(),
                detail: json!({ "role": names::runtime_role(app) }),
            },
        )
        .await?;
        Ok(())
    }
}

/// The worker's view of a registry record; `None` for a record the registry should never
/// hold (bad id, level or identity), which is logged by the caller.
pub fn worker_tenant(record: &registry::TenantRecord) -> Option<WorkerTenant> {
    let mut settings = std::collections::BTreeMap::new();
    let mut secret_settings = Vec::new();
    for (name, value) in record.config.as_object()? {
        if value.get(SECRET_MARK).is_some() {
            secret_settings.push(name.clone());
        } else {
            settings.insert(name.clone(), value.clone());
        }
    }
    Some(WorkerTenant {
        id: record.id.clone(),
        level: record.isolation,
        suspended: record.status != registry::TenantStatus::Active,
        identity: record.identity.clone(),
        options: TenantOptions {
            flags: serde_json::from_value(record.features.clone()).ok()?,
            settings,
        },
        secret_settings,
        network: record.network.clone(),
        incarnation: record.created_micros,
    })
}
