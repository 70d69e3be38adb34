//! Outbound HTTP for app code: `ctx.http()` on the request's [`crate::AppContext`], the only
//! way out app code gets. [`HttpOut`] is the worker's side: it keeps each tenant's list.
//!
//! A request may reach what the resolved tenant's allow-list (tenants.yaml `network:`) or the
//! app's (`[egress.apps]`) names, and nothing else; addresses are checked and pinned by
//! [`bulkhead_egress::Egress`]. A tenant without a list (or with an invalid one) reaches only
//! what the app's list allows.

use std::collections::HashMap;
use std::sync::RwLock;

use bulkhead_egress::{AllowList, Egress, Request, Response};
use bulkhead_model::TenantId;

/// The app's egress and each tenant's allow-list, replaced as the worker's configuration
/// changes.
#[derive(Debug)]
pub struct HttpOut {
    egress: Egress,
    lists: RwLock<HashMap<TenantId, AllowList>>,
    /// The platform's CONNECT proxy and this app's token for it, when it runs one.
    proxy: Option<(String, bulkhead_model::Secret)>,
}

impl HttpOut {
    pub fn new(egress: Egress) -> Self {
        Self {
            egress,
            lists: RwLock::new(HashMap::new()),
            proxy: None,
        }
    }

    /// Adds the platform's CONNECT proxy (`host:port`) and this app's token for it.
    pub fn with_proxy(mut self, addr: String, token: bulkhead_model::Secret) -> Self {
        self.proxy = Some((addr, token));
        self
    }

    pub fn set(&self, tenant: TenantId, list: AllowList) {
        if let Ok(mut l) = self.lists.write() {
            l.insert(tenant, list);
        }
    }

    pub fn remove(&self, tenant: &TenantId) {
        if let Ok(mut l) = self.lists.write() {
            l.remove(tenant);
        }
    }

    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Outbound HTTP as `tenant`.
    pub fn tenant(&self, tenant: &TenantId) -> TenantHttp<'_> {
        let list = self
            .lists
            .read()
            .ok()
            .and_then(|l| l.get(tenant).cloned())
            .unwrap_or_default();
        TenantHttp {
            out: self,
            tenant: tenant.clone(),
            list,
        }
    }
}

/// Outbound HTTP bound to one tenant.
#[derive(Debug)]
pub struct TenantHttp<'a> {
    out: &'a HttpOut,
    tenant: TenantId,
    list: AllowList,
}

impl TenantHttp<'_> {
    pub async fn send(&self, req: Request) -> bulkhead_egress::Result<Response> {
        self.out.egress.send(&self.tenant, &self.list, req).await
    }

    pub async fn get(&self, url: &str) -> bulkhead_egress::Result<Response> {
        self.send(Request::get(url)).await
    }

    /// `http://<tenant>:<token>@<proxy>` for an HTTP client of the app's own choosing
    /// (`https_proxy`): the proxy enforces the same lists. `None` without a proxy.
    pub fn proxy_url(&self) -> Option<bulkhead_model::Secret> {
        let (addr, token) = self.out.proxy.as_ref()?;
        Some(bulkhead_model::Secret::new(format!(
            "http://{}:{}@{addr}",
            self.tenant,
            token.expose()
        )))
    }
}
