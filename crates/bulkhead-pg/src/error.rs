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
    /// A PostgreSQL connection description whose TLS part cannot be used (an unknown
    /// `sslmode`, an unreadable or invalid certificate file). A configuration error.
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
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
            Error::DatabaseUnavailable(_) | Error::Tls(_) => ErrorCode::DatabaseUnavailable,
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
        classify(
            db.code().code(),
            db.message(),
            db.constraint().unwrap_or_default(),
            db.column().unwrap_or_default(),
            entity,
            deleting,
        )
        .unwrap_or(Error::Database(err))
    }
}

/// The typed error for a SQLSTATE raised by a statement on `entity`, or `None` for one no
/// client can cause (the caller keeps it as an opaque [`Error::Database`]).
fn classify(
    code: &str,
    message: &str,
    constraint: &str,
    column: &str,
    entity: &str,
    deleting: bool,
) -> Option<Error> {
    let (constraint, column, entity) =
        (constraint.to_owned(), column.to_owned(), entity.to_owned());
    Some(match (code, code.get(..2).unwrap_or_default()) {
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
        // Data exceptions (invalid text, out-of-range numbers and times, NUL, bad escapes) and
        // program limits (a value too large for an index): the caller's value.
        (_, "22" | "54") => Error::OutOfRange {
            entity,
            field: column,
            detail: message.to_owned(),
        },
        ("42501", _) if message.contains("row-level security") => Error::RlsRefused,
        // Serialization failure, deadlock: rolled back, safe to retry.
        (_, "40") => Error::Conflict(message.to_owned()),
        // Connection, resources (too many connections, out of memory, disk full), operator
        // intervention (shutdown, statement timeout, cancel): retry later.
        (_, "08" | "53" | "57") => Error::DatabaseUnavailable(format!("{code}: {message}")),
        // Names (class 42) come only from the validated manifest, so an undefined table or
        // column here means the schema is behind the manifest: the server's fault, opaque.
        _ => return None,
    })
}

impl bulkhead_model::Coded for Error {
    fn code(&self) -> ErrorCode {
        Error::code(self)
    }

    fn field(&self) -> Option<&str> {
        match self {
            Error::UnknownField { field, .. }
            | Error::WrongType { field, .. }
            | Error::OutOfRange { field, .. }
            | Error::MissingField { field, .. } => Some(field),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SQLSTATE class a client can cause, with the code and status it becomes.
    #[test]
    fn client_caused_sqlstates_map_to_client_codes_and_the_rest_stays_opaque() {
        let table: &[(&str, Option<ErrorCode>)] = &[
            ("22021", Some(ErrorCode::OutOfRange)), // NUL / bad encoding
            ("22009", Some(ErrorCode::OutOfRange)), // time zone displacement
            ("22008", Some(ErrorCode::OutOfRange)), // datetime field overflow
            ("22003", Some(ErrorCode::OutOfRange)), // numeric out of range
            ("22P02", Some(ErrorCode::OutOfRange)), // invalid text representation
            ("22P05", Some(ErrorCode::OutOfRange)), // untranslatable character (jsonb \u0000)
            ("2201B", Some(ErrorCode::OutOfRange)), // invalid regular expression
            ("54000", Some(ErrorCode::OutOfRange)), // index row too large
            ("23505", Some(ErrorCode::UniqueViolation)),
            ("23P01", Some(ErrorCode::UniqueViolation)),
            ("23503", Some(ErrorCode::ReferenceNotFound)),
            ("23502", Some(ErrorCode::MissingField)),
            ("23514", Some(ErrorCode::OutOfRange)),
            ("23001", Some(ErrorCode::UniqueViolation)),
            ("40001", Some(ErrorCode::TransactionConflict)),
            ("40P01", Some(ErrorCode::TransactionConflict)),
            ("53300", Some(ErrorCode::DatabaseUnavailable)),
            ("53100", Some(ErrorCode::DatabaseUnavailable)),
            ("57014", Some(ErrorCode::DatabaseUnavailable)),
            ("57P01", Some(ErrorCode::DatabaseUnavailable)),
            ("08006", Some(ErrorCode::DatabaseUnavailable)),
            ("42703", None),
            ("42P01", None),
            ("42501", None),
            ("XX000", None),
            ("P0001", None),
            ("", None),
            ("é", None),
        ];
        for (code, want) in table {
            let got = classify(code, "m", "c", "f", "ticket", false).map(|e| e.code());
            assert_eq!(got, *want, "{code}");
            if let Some(w) = want {
                let status = w.http_status();
                assert!(
                    (400..500).contains(&status) || status == 503,
                    "{code}: a client-caused error is a 4xx or a retryable 503"
                );
            }
        }
        let rls = classify(
            "42501",
            "new row violates row-level security policy",
            "",
            "",
            "t",
            false,
        );
        assert_eq!(rls.map(|e| e.code()), Some(ErrorCode::RlsRefused));
        let deleting = classify("23503", "m", "c", "", "t", true);
        assert_eq!(deleting.map(|e| e.code()), Some(ErrorCode::StillReferenced));
        let field = classify("22P02", "bad", "", "due", "t", false);
        assert!(matches!(field, Some(Error::OutOfRange { field, .. }) if field == "due"));
    }
}
