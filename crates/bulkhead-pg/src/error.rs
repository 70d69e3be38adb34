//! The data layer's errors, each with a stable [`ErrorCode`]. Database errors are classified
//! by SQLSTATE here and nowhere else.

use bulkhead_model::{ErrorCode, ManifestError};

/// What went wrong, typed. `Display` is safe to show a client except for [`Error::Database`]
/// and [`Error::Internal`], whose messages belong in the log only.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown entity {0:?}")]
    UnknownEntity(String),
    #[error("{entity} has no field {field:?}")]
    UnknownField { entity: String, field: String },
    #[error("{entity}.{field}: expected {expected}")]
    WrongType {
        entity: String,
        field: String,
        expected: String,
    },
    #[error("{entity}.{field}: {detail}")]
    OutOfRange {
        entity: String,
        field: String,
        detail: String,
    },
    #[error("{entity}.{field} is required")]
    MissingField { entity: String, field: String },
    #[error("tenant not found")]
    TenantNotFound,
    #[error("no {entity} with this id")]
    NotFound { entity: String },
    #[error("{entity}: a row with the same {constraint} already exists")]
    UniqueViolation { entity: String, constraint: String },
    #[error("{entity}: a referenced row does not exist in this tenant ({constraint})")]
    ReferenceNotFound { entity: String, constraint: String },
    #[error("{entity}: the row is still referenced ({constraint})")]
    StillReferenced { entity: String, constraint: String },
    #[error("row-level security refused the write")]
    RlsRefused,
    #[error("{action} on {entity}{} is not allowed for your roles", .field.as_ref().map(|f| format!(" (field {f})")).unwrap_or_default())]
    Forbidden {
        entity: String,
        action: &'static str,
        field: Option<String>,
    },
    #[error("cross-tenant access to {entity:?} is not granted in the manifest")]
    CrossTenantDenied { entity: String },
    #[error("{entity} is global reference data, written only through the admin path")]
    ReadOnlyEntity { entity: String },
    #[error("no database connection became free within {waited_ms} ms")]
    PoolExhausted { waited_ms: u64 },
    #[error("bad query: {0}")]
    BadQuery(String),
    #[error("the migration has destructive steps ({0}); re-run with the destructive flag")]
    DestructiveChange(String),
    #[error(transparent)]
    InvalidManifest(#[from] ManifestError),
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
    #[error("the transaction conflicted with a concurrent one and was rolled back; retry it")]
    Conflict(String),
    #[error("database error: {}", describe(.0))]
    Database(#[source] tokio_postgres::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// SQLSTATE and message of a database error (tokio-postgres prints only "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

impl Error {
    /// The stable code a client sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::UnknownEntity(_) => ErrorCode::UnknownEntity,
            Error::UnknownField { .. } => ErrorCode::UnknownField,
            Error::WrongType { .. } => ErrorCode::WrongType,
            Error::OutOfRange { .. } => ErrorCode::OutOfRange,
            Error::MissingField { .. } => ErrorCode::MissingField,
            Error::TenantNotFound => ErrorCode::TenantNotFound,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::UniqueViolation { .. } => ErrorCode::UniqueViolation,
            Error::ReferenceNotFound { .. } => ErrorCode::ReferenceNotFound,
            Error::StillReferenced { .. } => ErrorCode::StillReferenced,
            Error::RlsRefused => ErrorCode::RlsRefused,
            Error::Forbidden { .. } => ErrorCode::Forbidden,
            Error::CrossTenantDenied { .. } => ErrorCode::CrossTenantDenied,
            Error::ReadOnlyEntity { .. } => ErrorCode::ReadOnlyEntity,
            Error::PoolExhausted { .. } => ErrorCode::PoolExhausted,
            Error::BadQuery(_) => ErrorCode::BadQuery,
            Error::DestructiveChange(_) => ErrorCode::DestructiveChange,
            Error::InvalidManifest(_) => ErrorCode::InvalidManifest,
            Error::DatabaseUnavailable(_) => ErrorCode::DatabaseUnavailable,
            Error::Conflict(_) => ErrorCode::TransactionConflict,
            Error::Database(_) | Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Classifies a database error raised by a statement on `entity`. `deleting` tells a
    /// foreign-key violation on delete (still referenced) from one on write (missing target).
    pub(crate) fn from_db(err: tokio_postgres::Error, entity: &str, deleting: bool) -> Self {
        let Some(db) = err.as_db_error() else {
            return if err.is_closed() {
                Error::DatabaseUnavailable(err.to_string())
            } else {
                Error::Database(err)
            };
        };
        let constraint = db.constraint().unwrap_or_default().to_owned();
        let column = db.column().unwrap_or_default().to_owned();
        let entity = entity.to_owned();
        let code = db.code().code();
        match (code, code.get(..2).unwrap_or_default()) {
            ("23505" | "23P01", _) => Error::UniqueViolation { entity, constraint },
            ("23503", _) if deleting => Error::StillReferenced { entity, constraint },
            ("23503", _) => Error::ReferenceNotFound { entity, constraint },
            ("23502", _) => Error::MissingField {
                entity,
                field: column,
            },
            ("23514", _) => Error::OutOfRange {
                entity,
                field: constraint,
                detail: "violates a check constraint".into(),
            },
            // Any other integrity violation: the row conflicts with the data as it is.
            (_, "23") => Error::UniqueViolation { entity, constraint },
            // Data exceptions (invalid text, out-of-range numbers and times, NUL, bad escapes)
            // and program limits (a value too large for an index): the caller's value.
            (_, "22" | "54") => Error::OutOfRange {
                entity,
                field: column,
                detail: db.message().to_owned(),
            },
            ("42501", _) if db.message().contains("row-level security") => Error::RlsRefused,
            // Serialization failure, deadlock: rolled back, safe to retry.
            (_, "40") => Error::Conflict(db.message().to_owned()),
            // Connection, resources (too many connections, out of memory, disk full), operator
            // intervention (shutdown, statement timeout, cancel): retry later.
            (_, "08" | "53" | "57") => {
                Error::DatabaseUnavailable(format!("{code}: {}", db.message()))
            }
            // Names (class 42) come only from the validated manifest, so an undefined table or
            // column here means the schema is behind the manifest: the server's fault, opaque.
            _ => Error::Database(err),
        }
    }
}

impl Error {
    /// The database refused the password (SQLSTATE 28P01), e.g. after a rotation.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Error::DatabaseUnavailable(m) if m.starts_with("28P01"))
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match err {
            PoolError::Timeout(_) => Error::PoolExhausted { waited_ms: 0 },
            PoolError::Backend(e) => match e.as_db_error() {
                Some(db) => {
                    Error::DatabaseUnavailable(format!("{}: {}", db.code().code(), db.message()))
                }
                None => Error::DatabaseUnavailable(e.to_string()),
            },
            other => Error::DatabaseUnavailable(other.to_string()),
        }
    }
}
