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
        let records = registry::tenants(&self.client, &config.manifest.app).await?;
        config.tenants = shared_tenants(&records)?;
        config.bundle = super::active_bundle(&self.client, &config.manifest.app).await?;
        self.write_worker_config(&config.manifest.app, &config)
            .await?;
        self.place_dedicated(&config, &records).await
    }

    async fn write_worker_config(
        &self,
        space: &bulkhead_model::AppId,
        config: &WorkerConfig,
    ) -> Result<()> {
        let json = serde_json::to_string(config).map_err(|e| Error::Internal(e.to_string()))?;
        self.vault
            .put(space, WORKER_CONFIG, &VaultSecret::new(json))
            .await
            .map_err(vault)
    }

    /// The vault space holding a tenant's secrets: its own worker's when it has one, else the
    /// app's (whose worker serves it).
    pub fn serving_space(
        app: &bulkhead_model::AppId,
        tenant: &TenantId,
        dedicated: bool,
    ) -> bulkhead_model::AppId {
        if dedicated {
            app.tenant_space(tenant)
        } else {
            app.clone()
        }
    }

    /// Creates a tenant worker's vault space when it has none yet (with its file-link key).
    async fn ensure_space(&self, space: &bulkhead_model::AppId) -> Result<()> {
        if let Err(bulkhead_vault::Error::NotFound(_)) =
            self.vault.get(space, FILES_SIGNING_KEY).await
        {
            self.vault.create_app(space).await.map_err(vault)?;
        }
        self.ensure_files_signing_key(space).await
    }

    /// Moves each of `names` from the vault space `from` to `to` (where it is already is kept).
    async fn move_secrets(
        &self,
        names: &[String],
        from: &bulkhead_model::AppId,
        to: &bulkhead_model::AppId,
    ) -> Result<()> {
        for name in names {
            match self.vault.get(from, name).await {
                Ok(value) => {
                    self.vault.put(to, name, &value).await.map_err(vault)?;
                    self.vault.delete(from, name).await.map_err(vault)?;
                }
                Err(bulkhead_vault::Error::NotFound(_)) => {}
                Err(e) => return Err(vault(e)),
            }
        }
        Ok(())
    }

    /// The `database` tenants' places: a dedicated one gets its own vault space with the
    /// worker configuration naming only it (its files under their own root) and its secrets —
    /// moved out of the app's space, so the app's worker holds no credential of it; a shared
    /// one has its secrets back in the app's space and no space of its own.
    async fn place_dedicated(
        &self,
        app_config: &WorkerConfig,
        records: &[registry::TenantRecord],
    ) -> Result<()> {
        let app = &app_config.manifest.app;
        // A dedicated tenant's files go under a root of its own; with an S3 bucket (the app's
        // key opens every tenant's prefix) it has no files API yet. Read once per pass.
        let mut s3 = None;
        for record in records
            .iter()
            .filter(|r| r.isolation == IsolationLevel::Database)
        {
            let space = app.tenant_space(&record.id);
            let mut names = vec![tenant_password_path(&record.id)];
            names.extend(
                secret_setting_names(record)
                    .iter()
                    .map(|n| setting_secret_path(&record.id, n)),
            );
            if !record.dedicated() {
                if self.vault.get(&space, FILES_SIGNING_KEY).await.is_ok() {
                    self.move_secrets(&names, &space, app).await?;
                    self.vault.delete_app(&space).await.map_err(vault)?;
                }
                continue;
            }
            self.ensure_space(&space).await?;
            self.move_secrets(&names, app, &space).await?;
            let mut config = app_config.clone();
            config.tenants = vec![worker_view(record)?];
            let s3 = match s3 {
                Some(known) => known,
                None => *s3.insert(self.vault.get(app, FILES_S3).await.is_ok()),
            };
            config.files_root = app_config
                .files_root
                .as_ref()
                .filter(|_| !s3)
                .map(|root| root.join(space.as_str()));
            let current = match self.vault.get(&space, WORKER_CONFIG).await {
                Ok(raw) => serde_json::from_str::<WorkerConfig>(raw.expose()).ok(),
                Err(_) => None,
            };
            if current
                .as_ref()
                .map(serde_json::to_value)
                .and_then(|v| v.ok())
                != serde_json::to_value(&config).ok()
            {
                if let Some(bundle) = &config.bundle {
                    self.copy_bundle(app, &space, bundle).await?;
                }
                self.write_worker_config(&space, &config).await?;
            }
        }
        Ok(())
    }
}

/// The names of a tenant's secret settings (the registry names them; the vault holds them).
fn secret_setting_names(record: &registry::TenantRecord) -> Vec<String> {
    record
        .config
        .as_object()
        .map(|c| {
            c.iter()
                .filter(|(_, v)| v.get(SECRET_MARK).is_some())
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// The tenants an app's own worker serves: all but those with a worker of their own.
fn shared_tenants(records: &[registry::TenantRecord]) -> Result<Vec<WorkerTenant>> {
    records
        .iter()
        .filter(|r| !r.dedicated())
        .map(worker_view)
        .collect()
}

fn worker_view(record: &registry::TenantRecord) -> Result<WorkerTenant> {
    worker_tenant(record).ok_or_else(|| {
        Error::Internal(format!("registry entry of tenant {} is invalid", record.id))
    })
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
        // Secrets: the database password and the secret settings the registry names, in the
        // app's space and in the tenant's own worker's space, which goes with them.
        let mut names = vec![tenant_password_path(tenant)];
        names.extend(
            record
                .as_ref()
                .map(secret_setting_names)
                .unwrap_or_default()
                .iter()
                .map(|n| setting_secret_path(tenant, n)),
        );
        let space = manifest.app.tenant_space(tenant);
        for name in &names {
            self.vault
                .delete(&manifest.app, name)
                .await
                .map_err(vault)?;
        }
        if level == bulkhead_model::IsolationLevel::Database {
            self.vault.delete_app(&space).await.map_err(vault)?;
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
                    "secret_settings": names.len() - 1,
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
    /// Provisions a tenant of an app at its level and keeps what its worker needs in the vault
    /// space of the worker that serves it (its own when `dedicated`, else the app's): a
    /// `database` tenant's login password (stored when generated; replaced when the vault lost
    /// it).
    pub async fn ensure_tenant(
        &self,
        manifest: &AppManifest,
        tenant: &bulkhead_model::TenantId,
        level: bulkhead_model::IsolationLevel,
        dedicated: bool,
    ) -> Result<()> {
        let dedicated = dedicated && level == IsolationLevel::Database;
        let app = &Self::serving_space(&manifest.app, tenant, dedicated);
        if dedicated {
            self.ensure_space(app).await?;
        }
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
        let records = registry::tenants(&self.client, app).await?;
        let bundle = super::active_bundle(&self.client, app).await?;
        let changed_bundle = config.bundle != bundle;
        config.bundle = bundle;
        // Dedicated tenants get their places before the app's worker lets go of them.
        self.place_dedicated(&config, &records).await?;
        let tenants = shared_tenants(&records)?;
        if config.tenants != tenants || changed_bundle {
            config.tenants = tenants;
            self.write_worker_config(app, &config).await?;
        }
        Ok(())
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
        if let Some(k) = registry::tenant(&self.client, app, spec.id.as_str()).await?
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
        self.ensure_tenant(manifest, &spec.id, spec.isolation, spec.dedicated())
            .await?;
        self.register_tenant(manifest, spec).await?;
        self.sync_worker_config(app).await
    }

    /// Records a provisioned tenant's declaration in the registry and audits a creation or a
    /// change; does nothing when the registry already has it so. The app's workers learn of
    /// it at the next [`Platform::sync_worker_config`] (one per batch: `apply` declares all its
    /// tenants, then publishes once). Returns whether anything changed.
    pub(crate) async fn register_tenant(
        &mut self,
        manifest: &AppManifest,
        spec: &TenantSpec,
    ) -> Result<bool> {
        let app = &manifest.app;
        let known = registry::tenant(&self.client, app, spec.id.as_str()).await?;
        let unchanged = known.as_ref().is_some_and(|k| {
            k.isolation == spec.isolation
                && k.identity == spec.identity
                && k.network == spec.network
                && k.residency == spec.residency
                && k.dedicated_worker == spec.dedicated_worker
        });
        if unchanged {
            return Ok(false);
        }
        registry::upsert_tenant(
            &self.client,
            app,
            &spec.id,
            spec.isolation,
            &spec.identity,
            &spec.network,
            spec.residency.as_deref(),
            spec.dedicated_worker,
        )
        .await?;
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
        Ok(true)
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
