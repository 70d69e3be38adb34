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
//! - [`http`]: outbound HTTP for app code (`api.http(&tenant)`), deny by default.
//! - [`options`]: per-tenant feature flags (OFREP) and configuration.
//! - [`realms`]: per-tenant realm endpoints (discovery, JWKS, token, revoke).
//! - [`error`]: JSON error bodies with stable codes.
//! - [`edge`]: the outermost layer: request ids, caught panics, JSON for every refusal.
//!
//! The runtime mints `TenantContext`s only from a [`resolve::ResolvedTenant`]; it must not
//! reach into control-plane internals, and a request without a resolved tenant gets no tenant
//! data (404/401), never "all tenants".

pub mod auth;
pub mod edge;
pub mod error;
pub mod files;
pub mod http;
pub mod openapi;
pub mod options;
pub mod realms;
pub mod resolve;
pub mod rest;
pub mod search;

pub use resolve::{
    CustomResolver, Mode, Refusal, ResolvedTenant, ResolverConfig, Source, Strategy,
    TenantDirectory, TenantLayer, TenantSet,
};
