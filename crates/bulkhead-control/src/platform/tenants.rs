//! Tenants: declaring at a level, suspending, resuming, deleting, and what each app's workers
//! need of them in the app's vault space.

use super::*;

impl Platform {
    /// Makes sure the app's file-link signing key exists in its vault space.
    pub async fn ensure_files_signing_key(&self, app: &bulkhead_model::AppId) -> Result<()> {
        match self.vault.get(app, FILES_SIGNING_KEY).await {
            Ok(_) => Ok(()),
            Err(bulkhead_vault::Error::NotFound(_)) => {
                // 32 random bytes as 64 hex characters.
                let key = bulkhead_pg::provision::generate_password();
                self.vault
                    .put(app, FILES_SIGNING_KEY, &key)
                    .await
                    .map_err(vault)
            }
            Err(e) => Err(vault(e)),
        }
    }

    /// Writes the worker configuration of an app into its vault space, with the tenant list as
    /// the registry has it now (whatever `config.tenants` held): the registry is the one
    /// source, so no publication ever shows running workers a partial tenant list.
    pub async fn publish_worker_config(&self, mut config: WorkerConfig) -> Result<()> {
        config.tenants = self.worker_tenants(&config.manifest.app).await?;
        self.write_worker_config(&config).await
    }

    async fn write_worker_config(&self, config: &WorkerConfig) -> Result<()> {
        let json = serde_json::to_string(config).map_err(|e| Error::Internal(e.to_string()))?;
        self.vault
            .put(&config.manifest.app, WORKER_CONFIG, &VaultSecret::new(json))
            .await
            .map_err(vault)
    }
}

impl Platform {
    /// Deletes a tenant of an app: its data at its level (rows, schema and role, or database
    /// and login role), its secrets (database password, secret settings), its files, its
    /// registry entry and — once no app has the tenant any more — its local realm (users,
    /// keys, refresh tokens) in `realms`; audited. Idempotent. A tenant created again under the
    /// same id starts empty.
    pub async fn delete_tenant(
        &mut self,
        manifest: &AppManifest,
        tenant: &bulkhead_model::TenantId,
        level: bulkhead_model::IsolationLevel,
        files: Option<&bulkhead_files::AppBucket>,
        realms: Option<&bulkhead_identity::store::RealmStore>,
    ) -> Result<usize> {
        let record = registry::tenant(&self.client, &manifest.app, tenant.as_str()).await?;
        self.provisioner
            .drop_tenant(manifest, tenant, level)
            .await
            .map_err(pg)?;
        self.vault
            .delete(&manifest.app, &tenant_password_path(tenant))
            .await
            .map_err(vault)?;
        // Secret settings: the registry names them; their values are in the app's vault space.
        let secret_names: Vec<String> = record
            .as_ref()
            .and_then(|r| r.config.as_object())
            .map(|c| {
                c.iter()
                    .filter(|(_, v)| v.get(SECRET_MARK).is_some())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        for name in &secret_names {
            self.vault
                .delete(&manifest.app, &setting_secret_path(tenant, name))
                .await
                .map_err(vault)?;
        }
        let removed_files = match files {
            Some(bucket) => bucket
                .tenant(tenant)
                .delete_all()
                .await
                .map_err(|e| Error::Internal(format!("files: {e}")))?,
            None => 0,
        };
        registry::remove_tenant(&self.client, &manifest.app, tenant).await?;
        self.sync_worker_config(&manifest.app).await?;
        // The realm is the tenant's, shared by its apps: it goes with the last of them.
        let mut realm_removed = false;
        if let Some(store) = realms {
            let still_used = self.tenant_in_other_apps(&manifest.app, tenant).await?;
            if !still_used {
                store
                    .delete_realm(tenant)
                    .await
                    .map_err(|e| Error::Internal(format!("the realm of {tenant}: {e}")))?;
                realm_removed = true;
            }
        }
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action: "tenant.delete",
                target: &format!("{}/{tenant}", manifest.app),
                detail: json!({
                    "isolation": level.as_str(),
                    "files": removed_files,
                    "secret_settings": secret_names.len(),
                    "realm_removed": realm_removed,
                }),
            },
        )
        .await?;
        Ok(removed_files)
    }

    /// Whether an app other than `app` still has `tenant`.
    async fn tenant_in_other_apps(
        &self,
        app: &bulkhead_model::AppId,
        tenant: &bulkhead_model::TenantId,
    ) -> Result<bool> {
        for (id, _) in registry::apps(&self.client).await? {
            if id == app.as_str() {
                continue;
            }
            let other =
                bulkhead_model::AppId::parse(&id).map_err(|e| Error::Internal(e.to_string()))?;
            if registry::tenant(&self.client, &other, tenant.as_str())
                .await?
                .is_some()
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Platform {
    /// Provisions a tenant of an app at its level and keeps what its worker needs in the
    /// app's vault space: a `database` tenant's login password (stored when generated;
    /// replaced when the vault lost it) and the tenant's entry in the worker configuration.
    pub async fn ensure_tenant(
        &self,
        manifest: &AppManifest,
        tenant: &bulkhead_model::TenantId,
        level: bulkhead_model::IsolationLevel,
    ) -> Result<()> {
        let app = &manifest.app;
        let done = self
            .provisioner
            .ensure_tenant(manifest, tenant, level)
            .await
            .map_err(pg)?;
        if let Some((_, cred)) = done.database {
            let name = tenant_password_path(tenant);
            let password = match cred.password {
                Some(p) => Some(p),
                None => match self.vault.get(app, &name).await {
                    Ok(_) => None,
                    Err(bulkhead_vault::Error::NotFound(_)) => Some(
                        self.provisioner
                            .rotate_password(&cred.role)
                            .await
                            .map_err(pg)?,
                    ),
                    Err(e) => return Err(vault(e)),
                },
            };
            if let Some(p) = password {
                self.vault.put(app, &name, &p).await.map_err(vault)?;
            }
        }
        Ok(())
    }

    /// Rewrites the tenant list in the app's worker configuration from the registry, so
    /// running workers pick up new, changed, suspended and deleted tenants. Nothing to do
    /// while the app has no worker configuration yet.
    pub async fn sync_worker_config(&self, app: &bulkhead_model::AppId) -> Result<()> {
        let mut config: WorkerConfig = match self.vault.get(app, WORKER_CONFIG).await {
            Ok(raw) => serde_json::from_str(raw.expose())
                .map_err(|e| Error::Internal(format!("worker config: {e}")))?,
            Err(bulkhead_vault::Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(vault(e)),
        };
        let tenants = self.worker_tenants(app).await?;
        if config.tenants != tenants {
            config.tenants = tenants;
            self.write_worker_config(&config).await?;
        }
        Ok(())
    }

    /// The app's tenants as its workers see them, from the registry.
    async fn worker_tenants(&self, app: &bulkhead_model::AppId) -> Result<Vec<WorkerTenant>> {
        registry::tenants(&self.client, app)
            .await?
            .iter()
            .map(|r| {
                worker_tenant(r).ok_or_else(|| {
                    Error::Internal(format!("registry entry of tenant {} is invalid", r.id))
                })
            })
            .collect()
    }

    /// [`Platform::declare_tenant`], and for a tenant whose users sign in locally makes sure
    /// its local realm exists in `realms` (signing keys sealed under the master key).
    /// Idempotent.
    pub async fn declare_tenant_with_realm(
        &mut self,
        manifest: &AppManifest,
        spec: &TenantSpec,
        realms: Option<&bulkhead_identity::store::RealmStore>,
        now: u64,
    ) -> Result<()> {
        self.declare_tenant(manifest, spec).await?;
        if let (bulkhead_model::tenants::IdentitySpec::Local { .. }, Some(store)) =
            (&spec.identity, realms)
        {
            let realm = |e: bulkhead_identity::store::StoreError| {
                Error::Internal(format!("the realm of {}: {e}", spec.id))
            };
            store.migrate().await.map_err(realm)?;
            store.create_realm(&spec.id, now).await.map_err(realm)?;
        }
        Ok(())
    }

    /// Declares a tenant of an app (`tenants.yaml`, `bulkhead tenant create`): provisions it at
    /// its level, registers its identity, network policy and residency, tells the app's
    /// workers, and audits a creation or a change. Idempotent: declaring it unchanged again
    /// writes nothing and audits nothing.
    pub async fn declare_tenant(
        &mut self,
        manifest: &AppManifest,
        spec: &TenantSpec,
    ) -> Result<()> {
        let app = &manifest.app;
        let known = registry::tenant(&self.client, app, spec.id.as_str()).await?;
        if let Some(k) = &known
            && k.isolation != spec.isolation
        {
            return Err(Error::Conflict(format!(
                "tenant {} of {app} is at level {}, not {}: use `bulkhead tenant move`",
                spec.id,
                k.isolation.as_str(),
                spec.isolation.as_str()
            )));
        }
        // Finishes provisioning a run cut short, even when the registry is already current.
        self.ensure_tenant(manifest, &spec.id, spec.isolation)
            .await?;
        let unchanged = known.as_ref().is_some_and(|k| {
            k.identity == spec.identity
                && k.network == spec.network
                && k.residency == spec.residency
        });
        if unchanged {
            return self.sync_worker_config(app).await;
        }
        registry::upsert_tenant(
            &self.client,
            app,
            &spec.id,
            spec.isolation,
            &spec.identity,
            &spec.network,
            spec.residency.as_deref(),
        )
        .await?;
        self.sync_worker_config(app).await?;
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action: if known.is_some() {
                    "tenant.update"
                } else {
                    "tenant.create"
                },
                target: &format!("{app}/{}", spec.id),
                detail: to_json(spec)?,
            },
        )
        .await?;
        Ok(())
    }

    /// Suspends or resumes a tenant; its app's workers refuse (or serve) it again within their
    /// reload interval. Returns false when the tenant is not registered.
    pub async fn set_tenant_status(
        &mut self,
        app: &bulkhead_model::AppId,
        tenant: &TenantId,
        suspended: bool,
    ) -> Result<bool> {
        let status = if suspended {
            registry::TenantStatus::Suspended
        } else {
            registry::TenantStatus::Active
        };
        if !registry::set_status(&self.client, app, tenant, status).await? {
            return Ok(false);
        }
        self.sync_worker_config(app).await?;
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action: if suspended {
                    "tenant.suspend"
                } else {
                    "tenant.resume"
                },
                target: &format!("{app}/{tenant}"),
                detail: json!({}),
            },
        )
        .await?;
        Ok(true)
    }
}
