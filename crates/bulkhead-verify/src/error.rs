//! Why a verify run could not run (a check that runs and fails is a finding, not an error).

/// What stopped a verify run or a signature check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}")]
    Database {
        context: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Control(#[from] bulkhead_control::Error),
    #[error(transparent)]
    Catalog(#[from] bulkhead_pg::Error),
    #[error("{context}")]
    Vault {
        context: String,
        #[source]
        source: bulkhead_vault::Error,
    },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Id(#[from] bulkhead_model::IdError),
    #[error("the realm store: {0}")]
    Realms(String),
    /// The report or its signature is not what it should be.
    #[error("{0}")]
    Report(String),
    /// Opening the deployment failed (the binary's configuration, vault, database).
    #[error("{0}")]
    Deployment(String),
    #[error("the system clock is before 1970")]
    Clock(#[from] std::time::SystemTimeError),
    #[error("not base64")]
    Base64(#[from] base64::DecodeError),
    #[error("not an Ed25519 key or signature")]
    Signature(#[from] ed25519_dalek::SignatureError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tokio_postgres::Error> for Error {
    fn from(source: tokio_postgres::Error) -> Self {
        Error::Database {
            context: "the database failed".into(),
            source,
        }
    }
}

pub(crate) use bulkhead_model::error_chain as chain;
