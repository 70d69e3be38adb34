//! The state every handler of an app shares ([`Api`]): its data plane, the authenticator of
//! its tenants' realms, files, flags and settings, search and outbound HTTP. It sits below the
//! handlers (`rest`, `files`, `options`, `search`) and above nothing of theirs.

use std::sync::Arc;

use axum::http::HeaderMap;
use bulkhead_model::{AppManifest, Entity, ErrorCode, TenantId};
use bulkhead_pg::{Actor, DataPlane, TenantContext};
use serde_json::Value;

use crate::auth::{self, Authenticator, Principal};
use crate::error::ApiError;
use crate::resolve::ResolvedTenant;

/// What the REST handlers share. App code holds it as router state but reaches tenant data
/// only through a request's [`Tenant`] extractor: every field is private, and nothing here
/// takes a tenant id from app code (invariants 1 and 11).
///
/// ```
/// // What app code may do with it: read the manifest it serves (these paths exist, so the
/// // two examples below fail for the reason they state).
/// fn manifest(api: &bulkhead_runtime::rest::Api) -> &bulkhead_model::AppManifest {
///     bulkhead_runtime::rest::manifest(api)
/// }
/// ```
///
/// ```compile_fail,E0616
/// // App code cannot mint a context for a tenant of its choosing: the data plane is private.
/// fn mint(api: &bulkhead_runtime::rest::Api, actor: bulkhead_pg::Actor) {
///     let other = bulkhead_model::TenantId::parse("other").unwrap();
///     let _ = api.plane.context(&other, actor);
/// }
/// ```
///
/// ```compile_fail,E0599
/// // Nor use another tenant's egress list, flags or settings: no method takes a tenant.
/// fn egress(api: &bulkhead_runtime::rest::Api) {
///     let other = bulkhead_model::TenantId::parse("other").unwrap();
///     let _ = api.http(&other);
/// }
/// ```
pub struct Api {
    plane: DataPlane,
    auth: Arc<dyn Authenticator>,
    /// The app's files, when it has a bucket.
    files: Option<crate::file_store::FilesApi>,
    /// Each tenant's flag and setting overrides.
    options: Arc<crate::options_store::OptionsStore>,
    /// The app's search indexes in this worker, when it has searchable fields.
    search: Option<bulkhead_search::SearchIndexes>,
    /// Outbound HTTP: deny by default, per-tenant and per-app allow-lists.
    http: Arc<crate::http::HttpOut>,
    /// The app's functions and front-end (the active bundle), when the worker runs them.
    deployments: Option<Arc<crate::functions_store::Deployments>>,
    openapi: Value,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("plane", &self.plane)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(plane: DataPlane, auth: Arc<dyn Authenticator>) -> Self {
        let openapi = crate::openapi::document(plane.manifest());
        let app = plane.manifest().app.clone();
        Self {
            plane,
            auth,
            files: None,
            options: Arc::default(),
            search: None,
            http: Arc::new(crate::http::HttpOut::new(bulkhead_egress::Egress::new(
                app,
                bulkhead_egress::AllowList::default(),
                bulkhead_egress::EgressConfig::default(),
            ))),
            deployments: None,
            openapi,
        }
    }

    /// Runs the app's functions and serves its front-end from `deployments`.
    pub fn with_deployments(
        mut self,
        deployments: Arc<crate::functions_store::Deployments>,
    ) -> Self {
        self.deployments = Some(deployments);
        self
    }

    pub(crate) fn deployments(&self) -> Option<&crate::functions_store::Deployments> {
        self.deployments.as_deref()
    }

    /// Serves the app's files from `files` (its bucket).
    pub fn with_files(mut self, files: Option<crate::file_store::FilesApi>) -> Self {
        self.files = files;
        self
    }

    /// Each tenant's flag and setting overrides, kept current by the worker.
    pub fn with_options(mut self, options: Arc<crate::options_store::OptionsStore>) -> Self {
        self.options = options;
        self
    }

    /// The app's search indexes in this worker.
    pub fn with_search(mut self, search: bulkhead_search::SearchIndexes) -> Self {
        self.search = Some(search);
        self
    }

    /// Outbound HTTP with the worker's egress settings and each tenant's list.
    pub fn with_http(mut self, http: Arc<crate::http::HttpOut>) -> Self {
        self.http = http;
        self
    }

    pub(crate) fn openapi(&self) -> &Value {
        &self.openapi
    }

    pub(crate) fn plane(&self) -> &DataPlane {
        &self.plane
    }

    pub(crate) fn files(&self) -> Option<&crate::file_store::FilesApi> {
        self.files.as_ref()
    }

    pub(crate) fn search_indexes(&self) -> Option<&bulkhead_search::SearchIndexes> {
        self.search.as_ref()
    }

    pub(crate) fn http_out(&self) -> &crate::http::HttpOut {
        &self.http
    }

    pub(crate) fn options_store(&self) -> &crate::options_store::OptionsStore {
        &self.options
    }

    /// Authenticates the request and mints its `TenantContext`.
    pub(crate) async fn context(
        &self,
        resolved: &ResolvedTenant,
        headers: &HeaderMap,
        write: bool,
    ) -> Result<(TenantContext, Principal), ApiError> {
        let has_credentials = auth::bearer(headers).is_some()
            || auth::cookie(headers, auth::SESSION_COOKIE).is_some();
        let principal = if !has_credentials && resolved.via.is_host() {
            // Public access: only for tenants named by the host, and only where the manifest
            // grants the `anonymous` role the action (checked inside TenantDb).
            Principal {
                subject: String::new(),
                roles: vec![bulkhead_model::ANONYMOUS_ROLE.to_owned()],
            }
        } else {
            auth::authenticate(self.auth.as_ref(), resolved, headers, write).await?
        };
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_owned);
        let ctx = self.plane.context(
            &resolved.tenant,
            Actor {
                user_id: (!principal.subject.is_empty()).then(|| principal.subject.clone()),
                request_id,
                roles: principal.roles.clone(),
            },
        )?;
        Ok((ctx, principal))
    }

    /// The same tenant, user and request acting with `role`'s permissions only: a function
    /// route's declared service role (`run_as`).
    pub(crate) fn run_as(
        &self,
        ctx: &TenantContext,
        role: &str,
    ) -> Result<TenantContext, ApiError> {
        let actor = ctx.actor();
        Ok(self.plane.context(
            ctx.tenant(),
            Actor {
                user_id: actor.user_id.clone(),
                request_id: actor.request_id.clone(),
                roles: vec![role.to_owned()],
            },
        )?)
    }

    pub(crate) fn entity(&self, name: &str) -> Result<&Entity, ApiError> {
        self.plane.manifest().entity(name).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownEntity, format!("unknown entity {name:?}"))
        })
    }
}

/// An anonymous caller refused by permissions is told to authenticate (401), not 403.
pub(crate) fn for_caller(principal: &Principal, e: bulkhead_pg::Error) -> ApiError {
    if principal.is_anonymous() && e.code() == ErrorCode::Forbidden {
        ApiError::unauthorized()
    } else {
        e.into()
    }
}

/// The data plane as the tenant directory of the resolution layer.
#[derive(Debug, Clone)]
pub struct PlaneDirectory(pub DataPlane);

impl crate::resolve::TenantDirectory for PlaneDirectory {
    fn is_active(&self, tenant: &bulkhead_model::TenantId) -> bool {
        self.0.is_active(tenant)
    }
}

/// The manifest an [`Api`] serves (for documentation tools).
pub fn manifest(api: &Api) -> &AppManifest {
    api.plane.manifest()
}

impl Api {
    /// The tenant directory of the resolution layer: the tenants this app's data plane serves.
    pub(crate) fn directory(&self) -> PlaneDirectory {
        PlaneDirectory(self.plane.clone())
    }
}

impl Api {
    /// The resolved tenant's flags as they apply to `caller`.
    pub(crate) fn flags(
        &self,
        tenant: &TenantId,
        caller: &Principal,
    ) -> crate::options_store::Flags<'_> {
        crate::options_store::Flags {
            manifest: self.plane().manifest(),
            live: self.options_store().get(tenant),
            tenant: tenant.clone(),
            user: caller.subject.clone(),
            roles: caller.roles.clone(),
        }
    }

    /// The resolved tenant's configuration.
    pub(crate) fn config(&self, tenant: &TenantId) -> crate::options_store::Config<'_> {
        crate::options_store::Config {
            manifest: self.plane().manifest(),
            live: self.options_store().get(tenant),
        }
    }
}
