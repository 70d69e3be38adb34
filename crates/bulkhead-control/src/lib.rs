//! Bulkhead's control plane, in the platform's own database (schema `bulkhead_control`):
//!
//! - [`audit`]: the append-only, hash-chained audit log and its verification.
//! - [`registry`]: apps, tenants and credential metadata (never plaintext secrets), and the
//!   provisioning steps that make provisioning resumable.
//! - [`reconcile`]: the plan that reconciles `tenants.yaml` with the registry.
//! - [`schema`]: the versions of this schema (refinery), a newer one refused.
//! - [`platform`]: app creation, tenant declaration, suspension, moves between levels and
//!   deletion, flags and settings, each step recorded, and each app's worker configuration in
//!   its vault space.
//!
//! It holds the platform's admin credentials; nothing here may be handed to an app worker.

pub mod audit;
pub mod platform;
pub mod reconcile;
pub mod registry;
pub mod schema;

/// Control-plane errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The platform database refused or failed a statement (the cause is kept).
    #[error("the platform database failed")]
    Database(#[source] tokio_postgres::Error),
    /// Provisioning an app or tenant database failed (the cause is kept).
    #[error("provisioning failed")]
    Provisioning(#[source] bulkhead_pg::Error),
    /// The vault failed (the cause is kept).
    #[error("the vault failed")]
    Vault(#[source] bulkhead_vault::Error),
    #[error("{0} not found")]
    NotFound(String),
    /// The input is invalid; the message names the field.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The request contradicts the current state (e.g. another isolation level).
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("internal: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl bulkhead_model::Coded for Error {
    fn code(&self) -> bulkhead_model::ErrorCode {
        use bulkhead_model::ErrorCode as C;
        match self {
            Error::NotFound(_) => C::NotFound,
            Error::Invalid(_) => C::OutOfRange,
            Error::Conflict(_) => C::Conflict,
            Error::Database(_) | Error::Provisioning(_) | Error::Vault(_) | Error::Internal(_) => {
                C::Internal
            }
        }
    }

    /// Invalid input names the field first: `settings.smtp.port: …`.
    fn field(&self) -> Option<&str> {
        match self {
            Error::Invalid(m) => m.split_once(':').map(|(f, _)| f),
            _ => None,
        }
    }
}

/// A value as JSON for the registry or the audit log.
pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(e.to_string()))
}

pub(crate) fn db(e: tokio_postgres::Error) -> Error {
    Error::Database(e)
}

/// Brings the control-plane schema to this binary's version (idempotent; one process at a
/// time); refuses a database a newer Bulkhead has migrated ([`schema`]).
pub async fn migrate(client: &mut tokio_postgres::Client) -> Result<()> {
    schema::migrate(client).await
}

/// How long a platform pool waits for, opens or recycles a connection.
const POOL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A small pool to the platform database with a bounded wait, so a stopped server makes
/// `/readyz` answer 503 quickly instead of hanging.
pub fn platform_pool(
    config: bulkhead_pg::PgConfig,
) -> std::result::Result<deadpool_postgres::Pool, String> {
    use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Timeouts};
    let manager = Manager::from_config(
        config.pg.clone(),
        config.connector(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Verified,
        },
    );
    Pool::builder(manager)
        .max_size(4)
        .runtime(Runtime::Tokio1)
        .timeouts(Timeouts {
            wait: Some(POOL_TIMEOUT),
            create: Some(POOL_TIMEOUT),
            recycle: Some(POOL_TIMEOUT),
        })
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_cause_and_stay_opaque_to_clients() {
        let e = Error::Provisioning(bulkhead_pg::Error::BadQuery("the detail".into()));
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("bad query: the detail"));
        assert_eq!(
            bulkhead_model::Coded::code(&e),
            bulkhead_model::ErrorCode::Internal
        );
        assert!(
            !e.to_string().contains("detail"),
            "the chain has it, not the message"
        );
    }
}
