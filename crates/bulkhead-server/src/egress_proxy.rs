//! The egress CONNECT proxy the gateway runs for isolated workers: one token per app (fresh
//! at each start), each app's egress settings and every tenant's allow-list, re-read from the
//! registry.

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
        for ProxyApp { app, .. } in &self.apps {
            for t in registry::tenants(&**client, app).await? {
                if t.status != registry::TenantStatus::Active {
                    continue;
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
        Ok(())
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
    fn egress_for_token(&self, token: &str) -> Option<Arc<bulkhead_egress::Egress>> {
        // Compare digests: the timing says nothing about the tokens.
        let given: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        self.apps
            .iter()
            .find(|a| a.digest == given)
            .map(|a| a.egress.clone())
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
