//! What the worker serves, kept in line with its configuration: each tenant's placement in
//! the data plane, its flags and settings, its egress list and the realm that verifies its
//! tokens. The configuration is re-read from the vault while the worker runs, so tenants that
//! are created, suspended, resumed, moved or deleted take effect without a restart; a vault
//! that is briefly unreadable keeps the last good state.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bulkhead_egress::AllowList;
use bulkhead_identity::external::{ExternalRealm, ExternalRealms};
use bulkhead_identity::jwt::Alg;
use bulkhead_model::bundle::{Bundle, BundleRef};
use bulkhead_model::tenants::IdentitySpec;
use bulkhead_model::worker::{
    BundleHead, WORKER_CONFIG, WorkerConfig, WorkerTenant, bundle_path, setting_secret_path,
    tenant_password_path,
};
use bulkhead_model::{AppId, IsolationLevel, TenantId};
use bulkhead_pg::{DataPlane, TenantPlacement};
use bulkhead_runtime::auth::{Authenticator, Principal, PublishedRealms};
use bulkhead_runtime::functions_store::{Deployed, Deployments};
use bulkhead_runtime::http::HttpOut;
use bulkhead_runtime::options::{LiveOptions, OptionsStore};
use bulkhead_vault::VaultReader;

use crate::Result;
use crate::boot::read_with_retry;

/// Token verification whose realms are replaced when the tenant list changes.
#[derive(Debug, Default)]
pub(crate) struct LiveRealms(RwLock<Option<PublishedRealms>>);

impl LiveRealms {
    fn replace(&self, realms: PublishedRealms) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(realms);
        }
    }
}

impl Authenticator for LiveRealms {
    fn authenticate<'a>(
        &'a self,
        tenant: &'a TenantId,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Principal>> + Send + 'a>> {
        let current = self.0.read().ok().and_then(|r| r.clone());
        Box::pin(async move { current?.authenticate(tenant, token).await })
    }
}

/// The realm that verifies a tenant's tokens: its local realm's published keys (EdDSA) or
/// its own OpenID provider (RS256 or EdDSA), for this app as the audience.
fn realm_of(config: &WorkerConfig, tenant: &WorkerTenant) -> ExternalRealm {
    match &tenant.identity {
        IdentitySpec::Local { .. } => {
            let issuer = format!(
                "{}/realms/{}",
                config.realm_base_url.trim_end_matches('/'),
                tenant.id
            );
            ExternalRealm {
                jwks_url: Some(format!("{issuer}/protocol/openid-connect/certs")),
                issuer,
                audience: config.manifest.app.to_string(),
                roles_claim: "roles".into(),
                algorithms: vec![Alg::EdDSA],
                leeway_secs: 30,
            }
        }
        IdentitySpec::Oidc {
            issuer,
            audience,
            jwks_url,
            roles_claim,
        } => ExternalRealm {
            issuer: issuer.clone(),
            jwks_url: jwks_url.clone(),
            audience: audience.clone(),
            roles_claim: roles_claim.clone(),
            algorithms: vec![Alg::RS256, Alg::EdDSA],
            leeway_secs: 30,
        },
    }
}

/// What the worker currently serves.
pub(crate) struct Live {
    pub(crate) app: AppId,
    pub(crate) plane: DataPlane,
    pub(crate) reader: Arc<dyn VaultReader>,
    pub(crate) realms: Arc<LiveRealms>,
    pub(crate) options: Arc<OptionsStore>,
    pub(crate) http: Arc<HttpOut>,
    /// The index copies, dropped for a tenant created again under the same id.
    pub(crate) search: Option<bulkhead_search::SearchIndexes>,
    pub(crate) applied: Vec<WorkerTenant>,
    /// The app's functions and front-end, switched when the active bundle changes.
    pub(crate) deployments: Arc<Deployments>,
    pub(crate) bundle: Option<BundleRef>,
}

impl Live {
    /// Activates the bundle `config` names (read from the vault by digest and checked against
    /// it); requests already running finish on the version they started with.
    pub(crate) async fn apply_bundle(
        &mut self,
        config: &WorkerConfig,
        attempts: u32,
    ) -> Result<()> {
        if config.bundle == self.bundle {
            return Ok(());
        }
        let Some(wanted) = &config.bundle else {
            self.deployments.clear();
            self.bundle = None;
            tracing::info!(app = %self.app, "no bundle deployed");
            return Ok(());
        };
        let head = read_with_retry(&*self.reader, &bundle_path(&wanted.digest), attempts).await?;
        let parts = BundleHead::read(head.expose())
            .part_paths(&wanted.digest)
            .map_err(crate::Error::Config)?;
        let mut content = if parts.is_empty() {
            head.expose().to_owned()
        } else {
            String::new()
        };
        for path in parts {
            content.push_str(
                read_with_retry(&*self.reader, &path, attempts)
                    .await?
                    .expose(),
            );
        }
        let bundle = Bundle::from_json(&content)
            .map_err(|e| crate::Error::Config(format!("bundle {}: {e}", wanted.digest)))?;
        if bundle.digest() != wanted.digest {
            return Err(crate::Error::Config(format!(
                "the vault's bundle does not match its digest {}",
                wanted.digest
            )));
        }
        let manifest =
            bulkhead_model::AppManifest::from_yaml(bundle.manifest_source(), "manifest.yaml")
                .map_err(|e| crate::Error::Config(format!("bundle manifest: {e}")))?;
        self.deployments
            .activate(Deployed::new(wanted.version, bundle, manifest.functions));
        self.bundle = Some(wanted.clone());
        tracing::info!(app = %self.app, version = wanted.version, digest = %wanted.digest, "bundle activated");
        Ok(())
    }

    /// Brings the data plane and the realms in line with `config`'s tenant list.
    pub(crate) async fn apply(&mut self, config: &WorkerConfig, attempts: u32) -> Result<()> {
        for tenant in &config.tenants {
            let before = self.applied.iter().find(|t| t.id == tenant.id);
            if before == Some(tenant) {
                continue;
            }
            // Flags and settings: replaced in place, secret settings read from the vault.
            let mut secrets = std::collections::BTreeMap::new();
            for name in &tenant.secret_settings {
                let raw = read_with_retry(
                    &*self.reader,
                    &setting_secret_path(&tenant.id, name),
                    attempts,
                )
                .await?;
                secrets.insert(
                    name.clone(),
                    serde_json::from_str(raw.expose()).unwrap_or(serde_json::Value::Null),
                );
            }
            self.options.set(
                tenant.id.clone(),
                LiveOptions {
                    options: tenant.options.clone(),
                    secrets,
                },
            );
            // An invalid list fails closed: the tenant reaches only the app's list.
            let list = AllowList::from_network(&tenant.network.default, &tenant.network.allow)
                .unwrap_or_else(|e| {
                    tracing::error!(app = %self.app, tenant = %tenant.id, error = %e, "invalid network allow-list; denying all");
                    AllowList::default()
                });
            self.http.set(tenant.id.clone(), list);
            // The placement only when it changed: re-registering drops the tenant's pools.
            if before.is_some_and(|b| {
                (b.level, b.suspended, &b.identity, b.incarnation)
                    == (
                        tenant.level,
                        tenant.suspended,
                        &tenant.identity,
                        tenant.incarnation,
                    )
            }) {
                continue;
            }
            // Deleted and created again: nothing of the old incarnation stays (its pools go
            // with the new registration, its index copy here).
            if before.is_some_and(|b| b.incarnation != tenant.incarnation)
                && let Some(search) = &self.search
                && let Err(e) = search.forget(&tenant.id)
            {
                tracing::warn!(app = %self.app, tenant = %tenant.id, error = %e, "cannot drop the old incarnation's index copy");
            }
            let database_password = if tenant.level == IsolationLevel::Database {
                Some(
                    read_with_retry(&*self.reader, &tenant_password_path(&tenant.id), attempts)
                        .await?,
                )
            } else {
                None
            };
            self.plane.register_tenant(TenantPlacement {
                tenant: tenant.id.clone(),
                level: tenant.level,
                database_password,
                suspended: tenant.suspended,
            });
            tracing::info!(app = %self.app, tenant = %tenant.id, level = tenant.level.as_str(), suspended = tenant.suspended, "tenant loaded");
        }
        for gone in self
            .applied
            .iter()
            .filter(|t| !config.tenants.iter().any(|n| n.id == t.id))
        {
            self.plane.remove_tenant(&gone.id);
            self.options.remove(&gone.id);
            self.http.remove(&gone.id);
            tracing::info!(app = %self.app, tenant = %gone.id, "tenant removed");
        }
        let identities = |ts: &[WorkerTenant]| -> Vec<(TenantId, IdentitySpec)> {
            ts.iter()
                .map(|t| (t.id.clone(), t.identity.clone()))
                .collect()
        };
        if identities(&self.applied) != identities(&config.tenants) || self.applied.is_empty() {
            let realms: HashMap<_, _> = config
                .tenants
                .iter()
                .map(|t| (t.id.clone(), realm_of(config, t)))
                .collect();
            let realms = ExternalRealms::new(realms)
                .map_err(|e| crate::Error::Config(format!("tenant realms: {e}")))?;
            self.realms.replace(PublishedRealms(realms));
        }
        self.applied = config.tenants.clone();
        Ok(())
    }
}

/// Re-reads the configuration every `every` and applies tenant changes. A vault that is
/// briefly unreadable keeps the last good state.
pub(crate) async fn reload(mut live: Live, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let config = match live.reader.get(WORKER_CONFIG).await {
            Ok(raw) => match crate::boot::parse_config(raw.expose()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "the worker configuration in the vault is not valid; keeping the last one");
                    continue;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot re-read the worker configuration; keeping the last one");
                continue;
            }
        };
        if config.tenants != live.applied
            && let Err(e) = live.apply(&config, 1).await
        {
            tracing::warn!(error = %e, "applying the new tenant list failed; retrying");
        }
        if let Err(e) = live.apply_bundle(&config, 1).await {
            tracing::warn!(error = %e, "activating the new bundle failed; keeping the last one");
        }
    }
}
