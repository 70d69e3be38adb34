//! Bulkhead's HTTP runtime: what tenant users and app clients touch.
//!
//! - [`resolve`]: the tenant-resolution tower layer (header, cookie, subdomain, path prefix,
//!   custom domain, custom resolver, default), host checks and trusted proxies.
//! - [`auth`]: bearer tokens verified only by the resolved tenant's realm.
//! - [`rest`] and [`openapi`]: the REST API generated from an app's manifest, and its
//!   OpenAPI 3.1 document.
//! - [`files`]: the tenant files API (upload, download, list, delete, signed links) over the
//!   app's bucket, with entity rows' permissions for their files.
//! - [`search`]: `GET /search` over the resolved tenant's own index, hits re-checked for the
//!   caller.
//! - [`functions`]: an app's own JavaScript functions (`/fn/…`, run in the worker's
//!   sandbox with a host bound to the resolved tenant and caller) and its front-end
//!   (`/app/…`), from the active bundle ([`functions_store::Deployments`]).
//! - [`http`]: outbound HTTP for app code (`ctx.http()`), deny by default.
//! - [`context`]: [`AppContext`], the tenant-bound handles app code's handlers receive.
//! - [`options`]: per-tenant feature flags (OFREP) and configuration.
//! - [`realms`]: per-tenant realm endpoints (discovery, JWKS, token, revoke).
//! - [`error`]: JSON error bodies with stable codes.
//! - [`edge`]: the outermost layer: request ids, caught panics, JSON for every refusal.
//!
//! The runtime mints `TenantContext`s only from a [`resolve::ResolvedTenant`]; it must not
//! reach into control-plane internals, and a request without a resolved tenant gets no tenant
//! data (404/401), never "all tenants".

mod api;
pub mod auth;
pub mod context;
pub mod edge;
pub mod error;
mod extract;
mod file_store;
pub mod files;
pub mod functions;
pub mod functions_store;
pub mod http;
pub mod openapi;
pub mod options;
mod options_store;
pub mod realms;
pub mod request_id;
pub mod resolve;
pub mod rest;
pub mod sdk;
pub mod search;
mod storage;

pub use context::AppContext;
pub use resolve::{
    CustomResolver, Mode, Refusal, ResolvedTenant, ResolverConfig, Source, Strategy,
    TenantDirectory, TenantLayer, TenantSelector, TenantSet,
};

/// An app's HTTP service: `custom` routes (handlers taking [`rest::Tenant`]) beside the
/// generated REST API, behind tenant resolution against the app's own tenants, inside the edge
/// layer. The tenant directory comes from the `Api` itself, so nothing here names a tenant.
pub fn app(
    api: std::sync::Arc<rest::Api>,
    resolution: ResolverConfig,
    custom: axum::Router<std::sync::Arc<rest::Api>>,
) -> axum::Router {
    let directory = std::sync::Arc::new(api.directory());
    let routes = custom.with_state(api.clone()).merge(rest::router(api));
    let layer = TenantLayer::new(resolution, directory, Mode::Chain);
    edge::harden(axum::Router::new().fallback_service(tower::Layer::layer(&layer, routes)))
}
