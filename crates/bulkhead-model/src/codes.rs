//! Stable error codes: what a client may rely on. The mapping to HTTP statuses lives here and
//! only here, with a test of the whole table.

use serde::{Deserialize, Serialize};

/// Every error a client can see, by stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The manifest names no such entity.
    UnknownEntity,
    /// The entity has no such field.
    UnknownField,
    /// A value has the wrong JSON type for its field.
    WrongType,
    /// A value has the right type but is outside what the field accepts.
    OutOfRange,
    /// A required field is missing or null.
    MissingField,
    /// The tenant does not exist (or is not visible): never says which.
    TenantNotFound,
    /// The request's selectors (header, cookie, path) or token name different tenants.
    TenantMismatch,
    /// No valid credentials.
    Unauthorized,
    /// The caller's roles do not allow this action or field.
    Forbidden,
    /// No row with this id in this tenant.
    NotFound,
    /// A unique constraint would be violated.
    UniqueViolation,
    /// A reference points at a row that does not exist in this tenant.
    ReferenceNotFound,
    /// The row is still referenced by other rows.
    StillReferenced,
    /// Row-level security refused the write (a tenant mismatch).
    RlsRefused,
    /// Cross-tenant access not granted in the manifest.
    CrossTenantDenied,
    /// Global (cross_tenant) entities are written only through the admin path.
    ReadOnlyEntity,
    /// No database connection became free in time.
    PoolExhausted,
    /// A query was malformed (bad cursor, bad filter).
    BadQuery,
    /// A manifest change needs the explicit destructive flag.
    DestructiveChange,
    /// The manifest is invalid.
    InvalidManifest,
    /// The database could not be reached.
    DatabaseUnavailable,
    /// A request body (an upload) is larger than allowed.
    PayloadTooLarge,
    /// An upload's content type is not accepted or does not match its content.
    UnsupportedMediaType,
    /// The request is malformed (body not JSON, bad query string, bad header).
    BadRequest,
    /// The request contradicts the current state (e.g. a tenant declared at another level).
    Conflict,
    /// The route exists but does not take this method.
    MethodNotAllowed,
    /// The transaction conflicted with a concurrent one (serialization failure, deadlock);
    /// nothing was written and the same request may be retried.
    TransactionConflict,
    /// Too many requests from this client; retry after the `Retry-After` delay.
    TooManyRequests,
    /// The app's worker is starting or restarting, or the database is overloaded; retry after
    /// the `Retry-After` delay.
    Unavailable,
    /// The route names a function its bundle does not export (or no bundle is deployed).
    FunctionNotFound,
    /// The app's function threw; the body is opaque, the log has the JavaScript stack.
    FunctionFailed,
    /// The function used more memory than its limit allows.
    LimitMemory,
    /// The function ran longer than its time limit.
    LimitTime,
    /// The function recursed deeper than its stack limit allows.
    LimitStack,
    /// The function's response is larger than its output limit.
    LimitOutput,
    /// The function created more promises than its limit allows.
    LimitPromises,
    /// The function called the `bulkhead` module more often than its limit allows.
    LimitHostCalls,
    /// An app bundle was refused (every problem is listed).
    InvalidBundle,
    /// Anything else; the body is opaque (with the request id) and the log has the cause.
    Internal,
}

impl ErrorCode {
    /// The code named `name` (its [`ErrorCode::as_str`] form).
    pub fn from_name(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    /// A limit of a mini-app function: a 5xx whose message is not a secret (it names the
    /// limit), so clients see it.
    pub fn is_limit(self) -> bool {
        matches!(
            self,
            Self::LimitMemory
                | Self::LimitTime
                | Self::LimitStack
                | Self::LimitOutput
                | Self::LimitPromises
                | Self::LimitHostCalls
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownEntity => "unknown_entity",
            Self::UnknownField => "unknown_field",
            Self::WrongType => "wrong_type",
            Self::OutOfRange => "out_of_range",
            Self::MissingField => "missing_field",
            Self::TenantNotFound => "tenant_not_found",
            Self::TenantMismatch => "tenant_mismatch",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::UniqueViolation => "unique_violation",
            Self::ReferenceNotFound => "reference_not_found",
            Self::StillReferenced => "still_referenced",
            Self::RlsRefused => "rls_refused",
            Self::CrossTenantDenied => "cross_tenant_denied",
            Self::ReadOnlyEntity => "read_only_entity",
            Self::PoolExhausted => "pool_exhausted",
            Self::BadQuery => "bad_query",
            Self::DestructiveChange => "destructive_change",
            Self::InvalidManifest => "invalid_manifest",
            Self::DatabaseUnavailable => "database_unavailable",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BadRequest => "bad_request",
            Self::Conflict => "conflict",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TransactionConflict => "transaction_conflict",
            Self::TooManyRequests => "too_many_requests",
            Self::Unavailable => "unavailable",
            Self::FunctionNotFound => "function_not_found",
            Self::FunctionFailed => "function_failed",
            Self::LimitMemory => "limit_memory",
            Self::LimitTime => "limit_time",
            Self::LimitStack => "limit_stack",
            Self::LimitOutput => "limit_output",
            Self::LimitPromises => "limit_promises",
            Self::LimitHostCalls => "limit_host_calls",
            Self::InvalidBundle => "invalid_bundle",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status for this code: the one mapping in the codebase.
    pub fn http_status(self) -> u16 {
        match self {
            Self::UnknownEntity
            | Self::NotFound
            | Self::TenantNotFound
            | Self::FunctionNotFound => 404,
            Self::UnknownField
            | Self::WrongType
            | Self::OutOfRange
            | Self::MissingField
            | Self::BadQuery
            | Self::BadRequest
            | Self::InvalidManifest
            | Self::InvalidBundle => 400,
            Self::UniqueViolation
            | Self::ReferenceNotFound
            | Self::StillReferenced
            | Self::DestructiveChange
            | Self::Conflict
            | Self::TransactionConflict => 409,
            Self::RlsRefused
            | Self::CrossTenantDenied
            | Self::ReadOnlyEntity
            | Self::TenantMismatch
            | Self::Forbidden => 403,
            Self::Unauthorized => 401,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::MethodNotAllowed => 405,
            Self::TooManyRequests => 429,
            Self::PoolExhausted | Self::DatabaseUnavailable | Self::Unavailable => 503,
            Self::LimitTime => 504,
            Self::FunctionFailed
            | Self::LimitMemory
            | Self::LimitStack
            | Self::LimitOutput
            | Self::LimitPromises
            | Self::LimitHostCalls
            | Self::Internal => 500,
        }
    }
}

/// A library error a client may see: its stable code and, where one is at fault, the request
/// field. Every library error implements it; `bulkhead-runtime/src/error.rs` turns any of them
/// into the one JSON error (opaque for 5xx), so no crate maps errors to HTTP by hand.
pub trait Coded: std::error::Error {
    fn code(&self) -> ErrorCode;
    fn field(&self) -> Option<&str> {
        None
    }
}

/// An error and its sources as one line, `a: b: c`, for logs and evidence.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode::{self, *};

    const TABLE: &[(ErrorCode, &str, u16)] = &[
        (UnknownEntity, "unknown_entity", 404),
        (UnknownField, "unknown_field", 400),
        (WrongType, "wrong_type", 400),
        (OutOfRange, "out_of_range", 400),
        (MissingField, "missing_field", 400),
        (TenantNotFound, "tenant_not_found", 404),
        (TenantMismatch, "tenant_mismatch", 403),
        (Unauthorized, "unauthorized", 401),
        (Forbidden, "forbidden", 403),
        (NotFound, "not_found", 404),
        (UniqueViolation, "unique_violation", 409),
        (ReferenceNotFound, "reference_not_found", 409),
        (StillReferenced, "still_referenced", 409),
        (RlsRefused, "rls_refused", 403),
        (CrossTenantDenied, "cross_tenant_denied", 403),
        (ReadOnlyEntity, "read_only_entity", 403),
        (PoolExhausted, "pool_exhausted", 503),
        (BadQuery, "bad_query", 400),
        (DestructiveChange, "destructive_change", 409),
        (InvalidManifest, "invalid_manifest", 400),
        (DatabaseUnavailable, "database_unavailable", 503),
        (PayloadTooLarge, "payload_too_large", 413),
        (UnsupportedMediaType, "unsupported_media_type", 415),
        (BadRequest, "bad_request", 400),
        (Conflict, "conflict", 409),
        (MethodNotAllowed, "method_not_allowed", 405),
        (TransactionConflict, "transaction_conflict", 409),
        (TooManyRequests, "too_many_requests", 429),
        (Unavailable, "unavailable", 503),
        (FunctionNotFound, "function_not_found", 404),
        (FunctionFailed, "function_failed", 500),
        (LimitMemory, "limit_memory", 500),
        (LimitTime, "limit_time", 504),
        (LimitStack, "limit_stack", 500),
        (LimitOutput, "limit_output", 500),
        (LimitPromises, "limit_promises", 500),
        (LimitHostCalls, "limit_host_calls", 500),
        (InvalidBundle, "invalid_bundle", 400),
        (Internal, "internal", 500),
    ];

    #[test]
    fn the_code_and_status_table_is_stable() {
        for (code, name, status) in TABLE {
            assert_eq!(code.as_str(), *name);
            assert_eq!(code.http_status(), *status, "{name}");
            assert_eq!(serde_json::to_value(code).unwrap(), *name);
            assert_eq!(ErrorCode::from_name(name), Some(*code));
        }
    }
}
