//! What app code's handlers receive: [`AppContext`], the request's tenant-bound handles. Its
//! tenant is the resolved one and its caller the verified one; no method takes a tenant id, a
//! role or a connection (invariant 11), and app code cannot build one — only the [`Tenant`]
//! extractor does, after resolution and authentication.
//!
//! [`Tenant`]: crate::rest::Tenant

use std::sync::Arc;

use bulkhead_pg::TenantContext;

use crate::api::Api;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::TenantHttp;
use crate::options_store::{Config, Flags};
use crate::resolve::ResolvedTenant;
use bulkhead_model::ErrorCode;

/// The request's tenant-bound handles: everything of [`TenantContext`] (`db()`,
/// `cross_tenant(…)`, `tenant()`), plus outbound HTTP, flags and settings for the same tenant
/// and caller.
#[derive(Clone)]
pub struct AppContext {
    ctx: TenantContext,
    caller: Principal,
    api: Arc<Api>,
}

impl std::fmt::Debug for AppContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppContext")
            .field("tenant", self.ctx.tenant())
            .field("caller", &self.caller.subject)
            .finish_non_exhaustive()
    }
}

impl AppContext {
    pub(crate) fn new(ctx: TenantContext, caller: Principal, api: Arc<Api>) -> Self {
        Self { ctx, caller, api }
    }

    /// Outbound HTTP with this tenant's allow-list (and the app's); deny by default.
    pub fn http(&self) -> TenantHttp<'_> {
        self.api.http_out().tenant(self.ctx.tenant())
    }

    /// This tenant's feature flags as they apply to this caller.
    pub fn flags(&self) -> Flags<'_> {
        self.api.flags(self.ctx.tenant(), &self.caller)
    }

    /// This tenant's settings (secret ones included: never send those to clients).
    pub fn config(&self) -> Config<'_> {
        self.api.config(self.ctx.tenant())
    }

    /// This tenant's search over the app's indexes in this worker, scoped to the caller's
    /// readable entities (the same as `GET /search`); `None` when the app has nothing
    /// searchable.
    pub async fn search(
        &self,
        req: &bulkhead_search::SearchRequest,
    ) -> Option<Result<bulkhead_search::SearchPage, bulkhead_search::Error>> {
        let indexes = self.api.search_indexes()?;
        Some(indexes.search(&self.ctx, req).await)
    }

    /// This tenant's files, with the caller's row permissions (the mini-apps' `files`).
    pub(crate) fn files(&self) -> crate::files::AppFiles<'_> {
        crate::files::AppFiles::new(&self.api, &self.ctx, &self.caller)
    }

    /// The app this context serves (for log lines).
    pub(crate) fn manifest_app(&self) -> String {
        crate::api::manifest(&self.api).app.to_string()
    }

    /// The verified caller.
    pub fn caller(&self) -> &Principal {
        &self.caller
    }
}

impl std::ops::Deref for AppContext {
    type Target = TenantContext;

    fn deref(&self) -> &TenantContext {
        &self.ctx
    }
}

/// The extractor for app code's own handlers: the request's [`AppContext`] (its tenant-bound
/// handles: `db()`, `http()`, `flags()`, `config()`) and [`Principal`], minted only after tenant
/// resolution and token verification — the one way app code reaches tenant data. Mount the
/// handlers with [`crate::app`].
#[derive(Debug, Clone)]
pub struct Tenant(pub AppContext, pub Principal);

impl axum::extract::FromRequestParts<Arc<Api>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Self, Self::Rejection> {
        let resolved = parts
            .extensions
            .get::<ResolvedTenant>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::TenantNotFound, "not found"))?;
        let write = !parts.method.is_safe();
        let (ctx, who) = api.context(&resolved, &parts.headers, write).await?;
        Ok(Tenant(AppContext::new(ctx, who.clone(), api.clone()), who))
    }
}
