//! JSON error bodies: `{ "error": { "code", "message", "field"?, "request_id"? } }`, status
//! from the one code → status table in `bulkhead_model::ErrorCode`. 5xx bodies are opaque and
//! carry the request id (the log has the cause under the same id); 503 and 429 say when to
//! retry (`Retry-After`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bulkhead_model::{Coded, ErrorCode};
use serde_json::json;

/// An error a client sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Names the request field (parameter, body field) at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or invalid credentials")
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadQuery, message)
    }
}

/// Every library error becomes the one JSON error through its [`Coded`] code: the only
/// error → HTTP mapping (the statuses come from the code table).
impl<E: Coded> From<E> for ApiError {
    fn from(e: E) -> Self {
        let code = e.code();
        let field = e.field().map(str::to_owned);
        if code.is_limit() {
            // The function's own doing, not the platform's: a warning, and the message (which
            // names the limit) for the client.
            tracing::warn!(error = %bulkhead_model::error_chain(&e), "request stopped at a limit");
            return Self {
                code,
                message: e.to_string(),
                field: None,
            };
        }
        if code.http_status() >= 500 {
            tracing::error!(error = %bulkhead_model::error_chain(&e), "request failed");
            let message = match code {
                ErrorCode::PoolExhausted
                | ErrorCode::DatabaseUnavailable
                | ErrorCode::Unavailable => "service temporarily unavailable",
                _ => "internal error",
            };
            return Self {
                code,
                message: message.into(),
                field: None,
            };
        }
        Self {
            code,
            message: e.to_string(),
            field,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        if status.is_server_error()
            && let Some(id) = crate::request_id::current()
        {
            error["request_id"] = json!(id);
        }
        let mut resp = (status, axum::Json(json!({ "error": error }))).into_response();
        let headers = resp.headers_mut();
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if matches!(status.as_u16(), 429 | 503) {
            headers.insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_opaque_and_client_errors_name_the_field() {
        let e: ApiError = bulkhead_pg::Error::Internal("secret detail".into()).into();
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(!e.message.contains("secret"));
        let e: ApiError = bulkhead_pg::Error::MissingField {
            entity: "ticket".into(),
            field: "title".into(),
        }
        .into();
        assert_eq!(e.field.as_deref(), Some("title"));
        assert_eq!(e.into_response().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_functions_limit_names_itself_and_its_throw_stays_opaque() {
        let limit: ApiError = bulkhead_sandbox::Failure {
            code: ErrorCode::LimitTime,
            message: "the function ran out of time".into(),
            field: None,
            stack: None,
        }
        .into();
        assert_eq!(limit.message, "the function ran out of time");
        assert_eq!(limit.into_response().status(), StatusCode::GATEWAY_TIMEOUT);
        let thrown: ApiError = bulkhead_sandbox::Failure {
            code: ErrorCode::FunctionFailed,
            message: "the function threw".into(),
            field: None,
            stack: Some("secret detail\n    at f (functions/a.js:1:1)".into()),
        }
        .into();
        assert_eq!(thrown.message, "internal error");
    }

    #[test]
    fn unavailable_says_when_to_retry() {
        let e: ApiError = bulkhead_pg::Error::DatabaseUnavailable("53300: too many".into()).into();
        assert!(!e.message.contains("53300"));
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
    }
}
