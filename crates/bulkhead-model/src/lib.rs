//! Bulkhead's vocabulary, shared by every other crate: validated ids ([`TenantId`], [`AppId`],
//! [`Ident`]), the naming functions that turn them into PostgreSQL names, app manifests,
//! isolation levels and the stable error codes clients see.
//!
//! Pure: no I/O, no async, no database. It must not depend on any other Bulkhead crate.

pub mod bundle;
mod causes;
mod codes;
pub mod egress;
mod ids;
pub mod manifest;
pub mod names;
pub mod options;
pub mod pgtls;
mod secret;
pub mod tenants;
pub mod values;
pub mod worker;
pub mod yaml;

pub use causes::with_causes;
pub use codes::{Coded, ErrorCode, error_chain};
pub use ids::{AppId, IdError, Ident, PLATFORM_COLUMNS, TenantId};
pub use manifest::{
    ANONYMOUS_ROLE, Action, AppManifest, Effective, Entity, Field, FieldType, FlagDecl, FlagKind,
    ManifestError, RolePermission, Scope, SettingDecl, ValueProblem,
};
pub use secret::Secret;

use serde::{Deserialize, Serialize};

/// Where a tenant's rows live and what enforces the boundary (see the design brief). Ordered
/// from weakest to strongest isolation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Shared tables with a `tenant_id` column: the query filter plus forced RLS.
    Row,
    /// Own schema in the app database, own role assumed per transaction.
    Schema,
    /// Own database with its own login role and password.
    Database,
}

impl IsolationLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Row => "row",
            Self::Schema => "schema",
            Self::Database => "database",
        }
    }
}

impl std::str::FromStr for IsolationLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "row" => Ok(Self::Row),
            "schema" => Ok(Self::Schema),
            "database" => Ok(Self::Database),
            other => Err(format!(
                "unknown isolation level {other:?}, expected one of row, schema, database"
            )),
        }
    }
}
