//! Reading requests strictly: JSON bodies only as `application/json`, query strings only as
//! valid percent-encoded UTF-8. Shared by the handlers.

use axum::body::Bytes;
use axum::http::HeaderMap;
use bulkhead_model::ErrorCode;
use serde_json::Value;

use crate::error::ApiError;

/// Whether the request says its body is JSON (`application/json` or `application/*+json`,
/// any parameters).
pub(crate) fn is_json_request(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .is_some_and(|v| {
            v.eq_ignore_ascii_case("application/json")
                || v.get(..12)
                    .is_some_and(|p| p.eq_ignore_ascii_case("application/"))
                    && v.ends_with("+json")
        })
}

/// A JSON request body: `application/json` (415 otherwise), valid JSON (400 otherwise).
pub(crate) fn json_body(headers: &HeaderMap, bytes: &Bytes) -> Result<Value, ApiError> {
    if !is_json_request(headers) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "the request body must be sent as application/json",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("request body is not valid JSON: {e}"),
        )
    })
}

/// The query string as name/value pairs, decoded strictly: `+` is a space, percent-escapes
/// must spell valid UTF-8 (axum's `Query` would replace bad bytes with U+FFFD and run the
/// request with a value the client never sent).
pub(crate) fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |part: &str| {
        let spaced = part.replace('+', " ");
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    "the query string is not valid percent-encoded UTF-8",
                )
            })
    };
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}
