//! The egress CONNECT proxy the gateway runs for isolated workers: one token per app (fresh
//! at each start) that speaks for the tenants the app's worker serves, one token per tenant
//! with a worker of its own (derived from the app's, HMAC-SHA256) that speaks for that tenant
//! only, each app's egress settings and every tenant's allow-list, re-read from the registry.

use crate::config::{Config, Secret};
use crate::error::Context;
use bulkhead_control::registry;
use bulkhead_model::{AppManifest, TenantId};
use deadpool_postgres::Pool;
use sha2::Digest;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// One app behind the proxy: its token (and the token's digest, compared per request).
#[derive(Debug)]
pub(crate) struct ProxyApp {
    pub(crate) app: bulkhead_model::AppId,
    pub(crate) token: Secret,
    pub(crate) digest: [u8; 32],
    pub(crate) egress: Arc<bulkhead_egress::Egress>,
}

/// The egress CONNECT proxy: one token per app (fresh at each start), each app's egress, and
/// every tenant's allow-list, re-read from the registry every two seconds.
#[derive(Debug)]
pub(crate) struct EgressProxy {
    pub(crate) addr: Option<std::net::SocketAddr>,
    pub(crate) apps: Vec<ProxyApp>,
    pub(crate) lists:
        RwLock<std::collections::HashMap<(String, String), bulkhead_egress::AllowList>>,
    /// (app, tenant) of the tenants with a worker of their own.
    pub(crate) dedicated: RwLock<std::collections::HashSet<(String, String)>>,
}

/// The proxy token of `tenant`'s own worker: bound to the app (its token is the key) and to
/// the tenant.
fn tenant_token(app_token: &Secret, tenant: &str) -> Secret {
    use hmac::Mac;
    const CONTEXT: &[u8] = b"bulkhead-egress-proxy/tenant/";
    // HMAC takes a key of any length, so this never falls back.
    let bytes: [u8; 32] =
        match hmac::Hmac::<sha2::Sha256>::new_from_slice(app_token.expose().as_bytes()) {
            Ok(mut mac) => {
                mac.update(CONTEXT);
                mac.update(tenant.as_bytes());
                mac.finalize().into_bytes().into()
            }
            Err(_) => sha2::Sha256::digest(
                [app_token.expose().as_bytes(), CONTEXT, tenant.as_bytes()].concat(),
            )
            .into(),
        };
    Secret::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl EgressProxy {
    pub(crate) async fn start(
        listen: Option<std::net::SocketAddr>,
        apps: &[AppManifest],
        config: &Config,
        pool: Pool,
    ) -> crate::error::Result<Arc<Self>> {
        let listener = match listen {
            Some(listen) => Some(
                TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding egress.proxy_listen {listen}"))?,
            ),
            None => None,
        };
        let addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        let mut entries = Vec::new();
        for m in apps {
            let egress = config
                .egress
                .egress_for(&m.app)
                .with_context(|| format!("[egress.apps] {}", m.app))?;
            let token = bulkhead_pg::provision::generate_password();
            entries.push(ProxyApp {
                app: m.app.clone(),
                digest: sha2::Sha256::digest(token.expose().as_bytes()).into(),
                token,
                egress: Arc::new(egress),
            });
        }
        let proxy = Arc::new(Self {
            addr,
            apps: entries,
            lists: RwLock::default(),
            dedicated: RwLock::default(),
        });
        proxy.refresh(&pool).await?;
        if let Some(listener) = listener {
            tokio::spawn(bulkhead_egress::proxy::serve(listener, proxy.clone()));
            if let Some(addr) = addr {
                tracing::info!("egress proxy listening on {addr}");
            }
        }
        let refresher = proxy.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Err(e) = refresher.refresh(&pool).await {
                    tracing::warn!(error = %e, "egress proxy: cannot re-read tenants");
                }
            }
        });
        Ok(proxy)
    }

    pub(crate) async fn refresh(&self, pool: &Pool) -> crate::error::Result<()> {
        let client = pool.get().await?;
        let mut lists = std::collections::HashMap::new();
        let mut dedicated = std::collections::HashSet::new();
        for ProxyApp { app, .. } in &self.apps {
            for t in registry::tenants(&**client, app).await? {
                if t.status != registry::TenantStatus::Active {
                    continue;
                }
                if t.dedicated() {
                    dedicated.insert((app.to_string(), t.id.to_string()));
                }
                // Fails closed, as the worker does: an invalid list is no list.
                let list = bulkhead_egress::AllowList::from_network(
                    &t.network.default,
                    &t.network.allow,
                )
                .unwrap_or_else(|e| {
                    tracing::error!(%app, tenant = %t.id, error = %e, "invalid network allow-list; denying all");
                    bulkhead_egress::AllowList::default()
                });
                lists.insert((app.to_string(), t.id.to_string()), list);
            }
        }
        if let Ok(mut slot) = self.lists.write() {
            *slot = lists;
        }
        if let Ok(mut slot) = self.dedicated.write() {
            *slot = dedicated;
        }
        Ok(())
    }

    /// The proxy address for `tenant`'s own worker of `app` and its tenant-bound token.
    pub(crate) fn for_tenant(
        &self,
        app: &bulkhead_model::AppId,
        tenant: &TenantId,
        at: Option<std::net::SocketAddr>,
    ) -> Option<(std::net::SocketAddr, bulkhead_model::Secret)> {
        self.for_app(app, at)
            .map(|(addr, token)| (addr, tenant_token(&token, tenant.as_str())))
    }

    fn is_dedicated(&self, app: &bulkhead_model::AppId, tenant: &TenantId) -> bool {
        self.dedicated
            .read()
            .is_ok_and(|d| d.contains(&(app.to_string(), tenant.to_string())))
    }

    /// The proxy address for `app` (its namespace's, when isolated) and its token.
    pub(crate) fn for_app(
        &self,
        app: &bulkhead_model::AppId,
        at: Option<std::net::SocketAddr>,
    ) -> Option<(std::net::SocketAddr, bulkhead_model::Secret)> {
        let addr = at.or(self.addr)?;
        self.apps
            .iter()
            .find(|a| &a.app == app)
            .map(|a| (addr, a.token.clone()))
    }
}

impl bulkhead_egress::proxy::ProxyPolicy for EgressProxy {
    fn egress_for_token(
        &self,
        token: &str,
        tenant: &TenantId,
    ) -> Option<Arc<bulkhead_egress::Egress>> {
        // Compare digests: the timing says nothing about the tokens.
        let digest = |t: &str| -> [u8; 32] { sha2::Sha256::digest(t.as_bytes()).into() };
        let given = digest(token);
        self.apps.iter().find_map(|a| {
            let dedicated = self.is_dedicated(&a.app, tenant);
            let speaks = if dedicated {
                digest(tenant_token(&a.token, tenant.as_str()).expose()) == given
            } else {
                a.digest == given
            };
            speaks.then(|| a.egress.clone())
        })
    }

    fn tenant_list(
        &self,
        egress: &bulkhead_egress::Egress,
        tenant: &TenantId,
    ) -> Option<bulkhead_egress::AllowList> {
        self.lists
            .read()
            .ok()?
            .get(&(egress.app().to_string(), tenant.to_string()))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bulkhead_egress::proxy::ProxyPolicy;

    /// An app worker's token speaks for the app's shared tenants only; a tenant worker's for
    /// its own tenant only.
    #[tokio::test]
    async fn proxy_tokens_are_bound_to_the_app_and_a_tenant_workers_to_its_tenant() {
        let app = bulkhead_model::AppId::parse("helpdesk").unwrap();
        let token = Secret::new("app-token-0123456789");
        let proxy = EgressProxy {
            addr: Some("127.0.0.1:3128".parse().unwrap()),
            apps: vec![ProxyApp {
                app: app.clone(),
                digest: sha2::Sha256::digest(token.expose().as_bytes()).into(),
                token: token.clone(),
                egress: Arc::new(bulkhead_egress::Egress::new(
                    app.clone(),
                    bulkhead_egress::AllowList::default(),
                    Default::default(),
                )),
            }],
            lists: RwLock::default(),
            dedicated: RwLock::new(
                [("helpdesk".to_owned(), "initech".to_owned())]
                    .into_iter()
                    .collect(),
            ),
        };
        let t = |s: &str| TenantId::parse(s).unwrap();
        let speaks = |token: &Secret, tenant: &str| {
            proxy.egress_for_token(token.expose(), &t(tenant)).is_some()
        };
        assert!(speaks(&token, "acme"));
        assert!(
            !speaks(&token, "initech"),
            "the app's token speaks for a dedicated tenant"
        );
        let (_, initech) = proxy.for_tenant(&app, &t("initech"), None).unwrap();
        assert!(speaks(&initech, "initech"));
        assert!(
            !speaks(&initech, "acme"),
            "a tenant's token speaks for another tenant"
        );
        assert!(!speaks(&initech, "umbrella"));
        let (_, other) = proxy.for_tenant(&app, &t("umbrella"), None).unwrap();
        assert_ne!(other.expose(), initech.expose());
    }
}
