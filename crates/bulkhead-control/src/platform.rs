//! App provisioning through the control plane: every step is recorded, so a run that crashed
//! between any two steps is finished by running it again; generated database passwords go
//! straight to the vault and only their location is registered.

use std::sync::Arc;

use bulkhead_model::options::{FlagOverride, TenantOptions};
use bulkhead_model::tenants::TenantSpec;
use bulkhead_model::{AppManifest, IsolationLevel, TenantId, names};
use bulkhead_pg::Provisioner;
use bulkhead_vault::{BootCredential, Secret as VaultSecret, VaultAdmin};
use serde_json::json;

use crate::audit::{self, Entry};
use crate::{Error, Result, registry, to_json};

// The worker contract (vault paths, configuration types) is defined in bulkhead-model.
pub use bulkhead_model::worker::{
    CROSS_TENANT_PASSWORD, FILES_S3, FILES_SIGNING_KEY, RUNTIME_PASSWORD, WORKER_CONFIG,
    WorkerConfig, WorkerTenant, setting_secret_path, tenant_password_path,
};

/// The platform's provisioning handle: control-plane database, admin provisioner, vault, and
/// (when files live on Garage) the bucket admin.
pub struct Platform {
    pub client: tokio_postgres::Client,
    pub provisioner: Provisioner,
    pub vault: Arc<dyn VaultAdmin>,
    /// Creates each app's own bucket and key; `None` for the local file backend.
    pub buckets: Option<bulkhead_files::garage::GarageAdmin>,
    /// Who is acting, for the audit log.
    pub actor: String,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// The steps of `create_app`, in order.
pub const APP_STEPS: &[&str] = &["register", "database", "vault", "bucket", "credentials"];

fn pg(e: bulkhead_pg::Error) -> Error {
    Error::Internal(format!("provisioning: {e}"))
}

fn vault(e: bulkhead_vault::Error) -> Error {
    Error::Internal(format!("vault: {e}"))
}

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
        id: TenantId::parse(&record.id).ok()?,
        level: record.isolation.parse().ok()?,
        suspended: record.status != registry::ACTIVE,
        identity: serde_json::from_value(record.identity.clone()).ok()?,
        options: TenantOptions {
            flags: serde_json::from_value(record.features.clone()).ok()?,
            settings,
        },
        secret_settings,
        network: serde_json::from_value(record.network.clone()).unwrap_or_default(),
    })
}

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
    /// and login role), its secrets, its files, its registry entry; audited. Idempotent.
    pub async fn delete_tenant(
        &mut self,
        manifest: &AppManifest,
        tenant: &bulkhead_model::TenantId,
        level: bulkhead_model::IsolationLevel,
        files: Option<&bulkhead_files::AppBucket>,
    ) -> Result<usize> {
        self.provisioner
            .drop_tenant(manifest, tenant, level)
            .await
            .map_err(pg)?;
        self.vault
            .delete(&manifest.app, &tenant_password_path(tenant))
            .await
            .map_err(vault)?;
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
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action: "tenant.delete",
                target: &format!("{}/{tenant}", manifest.app),
                detail: json!({ "isolation": level.as_str(), "files": removed_files }),
            },
        )
        .await?;
        Ok(removed_files)
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
            && k.isolation != spec.isolation.as_str()
        {
            return Err(Error::Conflict(format!(
                "tenant {} of {app} is at level {}, not {}: use `bulkhead tenant move`",
                spec.id,
                k.isolation,
                spec.isolation.as_str()
            )));
        }
        // Finishes provisioning a run cut short, even when the registry is already current.
        self.ensure_tenant(manifest, &spec.id, spec.isolation)
            .await?;
        let (identity, network) = (to_json(&spec.identity)?, to_json(&spec.network)?);
        let unchanged = known.as_ref().is_some_and(|k| {
            k.identity == identity && k.network == network && k.residency == spec.residency
        });
        if unchanged {
            return self.sync_worker_config(app).await;
        }
        registry::upsert_tenant(
            &self.client,
            app,
            &spec.id,
            spec.isolation,
            &identity,
            &network,
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
            registry::SUSPENDED
        } else {
            registry::ACTIVE
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
        let from: IsolationLevel = record
            .isolation
            .parse()
            .map_err(|e: String| Error::Internal(e))?;
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
            if record.status == registry::SUSPENDED {
                registry::mark_step(&self.client, &subject, "was-suspended").await?;
            }
            registry::set_status(&self.client, app, tenant, registry::SUSPENDED).await?;
            self.sync_worker_config(app).await?;
            // Running workers re-read their configuration; no write may land in the old
            // place after the copy.
            tokio::time::sleep(quiesce).await;
            registry::mark_step(&self.client, &subject, "suspend").await?;
        }
        crash("suspend")?;
        if !done("provision").await? {
            self.ensure_tenant(manifest, tenant, to).await?;
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
            }
            registry::mark_step(&self.client, &subject, "drop-old").await?;
        }
        crash("drop-old")?;
        // The last step: the registry names the new level and the tenant is served again.
        let status = if done("was-suspended").await? {
            registry::SUSPENDED
        } else {
            registry::ACTIVE
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

/// Marks a secret setting in the registry: `{"secret": <vault path>}`.
const SECRET_MARK: &str = "secret";

/// Checks a setting value against its declared JSON Schema; the error names the setting and
/// the path inside the value (`settings.smtp.port: 70000 is greater than the maximum of 65535`).
pub fn check_setting(decl: &bulkhead_model::SettingDecl, value: &serde_json::Value) -> Result<()> {
    let validator = jsonschema::validator_for(&decl.schema).map_err(|e| {
        Error::Invalid(format!(
            "settings.{}.schema is not a valid JSON Schema: {e}",
            decl.name
        ))
    })?;
    let problems: Vec<String> = validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path.to_string();
            let at = at.trim_start_matches('/').replace('/', ".");
            let field = if at.is_empty() {
                format!("settings.{}", decl.name)
            } else {
                format!("settings.{}.{at}", decl.name)
            };
            format!("{field}: {e}")
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(problems.join("; ")))
    }
}

impl Platform {
    /// Sets (or with `None` clears) a tenant's override of a flag; running workers pick it up
    /// within their reload interval. Audited.
    /// The registered tenant of an app.
    async fn tenant_record(
        &self,
        app: &bulkhead_model::AppId,
        tenant: &TenantId,
    ) -> Result<registry::TenantRecord> {
        registry::tenant(&self.client, app, tenant.as_str())
            .await?
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant} of app {app}")))
    }

    /// A tenant's flags as operators see them: `{flag, type, default, override}` each.
    pub async fn tenant_flags(
        &self,
        manifest: &AppManifest,
        tenant: &TenantId,
    ) -> Result<Vec<serde_json::Value>> {
        let rec = self.tenant_record(&manifest.app, tenant).await?;
        Ok(manifest
            .flags
            .iter()
            .map(|f| {
                json!({"flag": f.name, "type": f.kind, "default": f.default,
                       "override": rec.features.get(f.name.as_str())})
            })
            .collect())
    }

    /// A tenant's settings: `{setting, value, overridden}` each; secret values never appear
    /// (`{"secret": true, "set": bool}` instead).
    pub async fn tenant_settings(
        &self,
        manifest: &AppManifest,
        tenant: &TenantId,
    ) -> Result<Vec<serde_json::Value>> {
        let rec = self.tenant_record(&manifest.app, tenant).await?;
        Ok(manifest
            .settings
            .iter()
            .map(|s| {
                let set = rec.config.get(s.name.as_str());
                let value = if s.secret {
                    json!({"secret": true, "set": set.is_some()})
                } else {
                    set.cloned()
                        .or_else(|| s.default.clone())
                        .unwrap_or(serde_json::Value::Null)
                };
                json!({"setting": s.name, "value": value, "overridden": set.is_some()})
            })
            .collect())
    }

    /// Asks every search follower of the app (each worker keeps its own copy) to rebuild the
    /// index of `tenant`, or of every tenant, from the database. Returns the tenants asked.
    /// Audited as `search.rebuild`.
    pub async fn request_search_rebuild(
        &mut self,
        manifest: &AppManifest,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<TenantId>> {
        let records = registry::tenants(&self.client, &manifest.app).await?;
        if let Some(t) = tenant
            && !records.iter().any(|r| r.id == t.as_str())
        {
            return Err(Error::NotFound(format!(
                "tenant {t} of app {}",
                manifest.app
            )));
        }
        let mut asked = Vec::new();
        for r in records {
            if tenant.is_some_and(|t| t.as_str() != r.id) {
                continue;
            }
            let id = TenantId::parse(&r.id).map_err(|e| Error::Internal(e.to_string()))?;
            let level = r
                .isolation
                .parse()
                .map_err(|_| Error::Internal(format!("tenant {id}: level {}", r.isolation)))?;
            self.provisioner
                .request_search_rebuild(manifest, &id, level)
                .await
                .map_err(pg)?;
            audit::append(
                &mut self.client,
                &Entry {
                    actor: &self.actor,
                    action: "search.rebuild",
                    target: &format!("{}/{id}", manifest.app),
                    detail: json!({}),
                },
            )
            .await?;
            asked.push(id);
        }
        Ok(asked)
    }

    pub async fn set_tenant_flag(
        &mut self,
        manifest: &AppManifest,
        tenant: &TenantId,
        name: &str,
        over: Option<&FlagOverride>,
    ) -> Result<()> {
        let decl = manifest.flag(name).ok_or_else(|| {
            Error::Invalid(format!(
                "flags.{name}: {} declares no such flag",
                manifest.app
            ))
        })?;
        if let Some(o) = over {
            o.check(decl)
                .map_err(|e| Error::Invalid(format!("flags.{name}.{e}")))?;
        }
        let value = over.map(to_json).transpose()?;
        self.set_option(
            manifest,
            tenant,
            registry::Options::Flags,
            name,
            value.as_ref(),
            json!({ "flag": name, "override": value }),
        )
        .await
    }

    /// Sets (or with `None` clears) a tenant's value of a setting, validated against its JSON
    /// Schema. A secret value goes to the app's vault space; the registry and the audit log
    /// only note that it is set.
    pub async fn set_tenant_setting(
        &mut self,
        manifest: &AppManifest,
        tenant: &TenantId,
        name: &str,
        value: Option<&serde_json::Value>,
    ) -> Result<()> {
        let decl = manifest.setting(name).ok_or_else(|| {
            Error::Invalid(format!(
                "settings.{name}: {} declares no such setting",
                manifest.app
            ))
        })?;
        if let Some(v) = value {
            check_setting(decl, v)?;
        }
        let path = setting_secret_path(tenant, name);
        let (stored, detail) = match (value, decl.secret) {
            (Some(v), true) => {
                self.vault
                    .put(&manifest.app, &path, &VaultSecret::new(v.to_string()))
                    .await
                    .map_err(vault)?;
                (
                    Some(json!({ SECRET_MARK: path })),
                    json!({ "setting": name, "secret": true }),
                )
            }
            (Some(v), false) => (Some(v.clone()), json!({ "setting": name, "value": v })),
            (None, secret) => {
                if secret {
                    self.vault
                        .delete(&manifest.app, &path)
                        .await
                        .map_err(vault)?;
                }
                (None, json!({ "setting": name, "cleared": true }))
            }
        };
        self.set_option(
            manifest,
            tenant,
            registry::Options::Settings,
            name,
            stored.as_ref(),
            detail,
        )
        .await
    }

    async fn set_option(
        &mut self,
        manifest: &AppManifest,
        tenant: &TenantId,
        options: registry::Options,
        name: &str,
        value: Option<&serde_json::Value>,
        detail: serde_json::Value,
    ) -> Result<()> {
        let app = &manifest.app;
        if !registry::set_option(&self.client, app, tenant, options, name, value).await? {
            return Err(Error::NotFound(format!("tenant {tenant} of {app}")));
        }
        self.sync_worker_config(app).await?;
        audit::append(
            &mut self.client,
            &Entry {
                actor: &self.actor,
                action: match options {
                    registry::Options::Flags => "tenant.flag",
                    registry::Options::Settings => "tenant.setting",
                },
                target: &format!("{app}/{tenant}"),
                detail,
            },
        )
        .await?;
        Ok(())
    }
}

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
            .filter_map(|t| Some((TenantId::parse(&t.id).ok()?, t.isolation.parse().ok()?)))
            .filter(|(_, level)| *level != IsolationLevel::Row)
            .collect();
        progress(tenants.len(), None);
        let prov = &self.provisioner;
        let progress = &progress;
        let total = tenants.len();
        let results: Vec<(
            String,
            std::result::Result<bulkhead_pg::migrate::MigrationReport, String>,
        )> = futures_util::stream::iter(tenants.iter().cloned())
            .map(|(t, level)| async move {
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
