//! A tenant's flag overrides and settings (secret ones in the app's vault space), checked
//! against the manifest's declarations.

use super::*;

/// Marks a secret setting in the registry: `{"secret": <vault path>}`.
pub(super) const SECRET_MARK: &str = "secret";

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
            && !records.iter().any(|r| &r.id == t)
        {
            return Err(Error::NotFound(format!(
                "tenant {t} of app {}",
                manifest.app
            )));
        }
        let mut asked = Vec::new();
        for r in records {
            if tenant.is_some_and(|t| *t != r.id) {
                continue;
            }
            let (id, level) = (r.id.clone(), r.isolation);
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
    /// Schema. A secret value goes to the vault space of the worker that serves the tenant
    /// (its own, or the app's); the registry and the audit log only note that it is set.
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
        let dedicated = registry::tenant(&self.client, &manifest.app, tenant.as_str())
            .await?
            .is_some_and(|r| r.dedicated());
        let space = Self::serving_space(&manifest.app, tenant, dedicated);
        let (stored, detail) = match (value, decl.secret) {
            (Some(v), true) => {
                self.vault
                    .put(&space, &path, &VaultSecret::new(v.to_string()))
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
                    self.vault.delete(&space, &path).await.map_err(vault)?;
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
