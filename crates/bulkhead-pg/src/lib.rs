//! Bulkhead on PostgreSQL: the database half of both isolation layers.
//!
//! - [`catalog`]: catalog facts and probes for `bulkhead verify`.
//! - [`ddl`] and [`migrate`]: tables, tenant-first keys, composite references and forced
//!   row-level security generated from an app manifest; versioned migrations with plans.
//! - [`provision`]: app databases and roles (owner, runtime, cross-tenant), tenants at the
//!   `row`, `schema` and `database` levels, with generated passwords.
//! - [`plane`]: [`DataPlane`], [`TenantContext`] and [`TenantDb`], the only way app code
//!   reaches data, and the audited cross-tenant escape hatch.
//! - [`search`]: what the search indexer reads from a tenant (its outbox and searchable
//!   rows), in one snapshot per read.
//! - [`router`]: bounded pools per database with checkout timeouts and a budget for tenant
//!   databases.
//! - [`tls`]: [`PgConfig`], a connection description with its TLS (libpq's `sslmode` and
//!   certificates, rustls), used for every connection.
//!
//! This crate must not depend on axum or any HTTP type, and must never accept SQL text from
//! app code: identifiers come from the validated manifest, values are bound parameters.

pub mod catalog;
pub mod ddl;
mod error;
pub mod migrate;
pub mod plane;
pub mod provision;
pub mod router;
pub mod search;
pub mod sql;
pub mod tls;

pub use error::{Error, Result};
pub use plane::{
    Actor, CrossTenantQuery, DataPlane, DataPlaneConfig, JsonPage, Page, Query, TenantContext,
    TenantDb, TenantPlacement, Tx,
};
pub use provision::{AppProvision, Provisioner, RoleCredential, Secret, TenantProvision};
pub use router::PoolSettings;
pub use sql::{Direction, Filter};
pub use tls::{PgConfig, PgTls, SslMode};
