//! Per-tenant feature flags and configuration, as a worker serves them.
//!
//! The worker keeps each tenant's overrides (and its secret settings, read from the app's vault
//! space) in an [`OptionsStore`] and replaces them when its configuration changes, so changes
//! take effect without a restart. Evaluation only ever looks at the resolved tenant's entry.
//!
//! - Rust: `ctx.flags()` and `ctx.config()` on the request's [`crate::AppContext`].
//! - HTTP: the OpenFeature Remote Evaluation Protocol (OFREP) —
//!   `POST /ofrep/v1/evaluate/flags/{key}` and `POST /ofrep/v1/evaluate/flags` (bulk, with an
//!   `ETag`; `If-None-Match` gives 304) — and `GET /config` (secret values never in plain).
//!   Callers without credentials see only the flags and settings the manifest marks
//!   `anonymous: true` (none by default: then 401).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_model::options::Evaluation;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::Api;
use crate::error::ApiError;
use crate::resolve::ResolvedTenant;

pub use crate::options_store::{Config, Flags, LiveOptions, OptionsStore};

fn ofrep(key: &str, e: &Evaluation) -> Value {
    json!({"key": key, "value": e.value, "reason": e.reason, "variant": e.variant, "metadata": {}})
}

fn ofrep_error(status: StatusCode, key: &str, code: &str, details: &str) -> Response {
    (
        status,
        Json(json!({"key": key, "errorCode": code, "errorDetails": details})),
    )
        .into_response()
}

/// The OFREP body's `context` must be an object when present, sent as `application/json`.
fn context_ok(headers: &HeaderMap, body: &Bytes) -> Result<(), String> {
    if body.is_empty() {
        return Ok(());
    }
    if !crate::extract::is_json_request(headers) {
        return Err("the body must be sent as application/json".into());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    match v.get("context") {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err("context must be an object".into()),
    }
}

/// `POST /ofrep/v1/evaluate/flags/{key}`.
pub(crate) async fn evaluate_one(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, who) = api.context(&resolved, &headers, false).await?;
    if let Err(e) = context_ok(&headers, &body) {
        return Ok(ofrep_error(
            StatusCode::BAD_REQUEST,
            &key,
            "INVALID_CONTEXT",
            &e,
        ));
    }
    let granted = api
        .plane()
        .manifest()
        .flag(&key)
        .is_none_or(|f| f.anonymous);
    if who.is_anonymous() && !granted {
        return Err(ApiError::unauthorized());
    }
    match api.flags(&resolved.tenant, &who).evaluate(&key) {
        Some(e) => Ok(Json(ofrep(&key, &e)).into_response()),
        None => Ok(ofrep_error(
            StatusCode::NOT_FOUND,
            &key,
            "FLAG_NOT_FOUND",
            "the app declares no such flag",
        )),
    }
}

/// `POST /ofrep/v1/evaluate/flags`: every flag, with an `ETag` of the result.
pub(crate) async fn evaluate_all(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, who) = api.context(&resolved, &headers, false).await?;
    if let Err(e) = context_ok(&headers, &body) {
        return Ok((
            StatusCode::BAD_REQUEST,
            Json(json!({"errorCode": "INVALID_CONTEXT", "errorDetails": e})),
        )
            .into_response());
    }
    let anonymous = who.is_anonymous();
    if anonymous && !api.plane().manifest().flags.iter().any(|f| f.anonymous) {
        return Err(ApiError::unauthorized());
    }
    let flags: Vec<Value> = api
        .flags(&resolved.tenant, &who)
        .visible(anonymous)
        .iter()
        .map(|(k, e)| ofrep(k, e))
        .collect();
    let doc = json!({ "flags": flags }).to_string();
    let digest = Sha256::digest(doc.as_bytes());
    let etag = format!(
        "\"{}\"",
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let etag_value = HeaderValue::from_str(&etag).map_err(|_| ApiError {
        code: bulkhead_model::ErrorCode::Internal,
        message: "etag".into(),
        field: None,
    })?;
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag_value)]).into_response());
    }
    Ok((
        [
            (header::ETAG, etag_value),
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
        ],
        doc,
    )
        .into_response())
}

/// `GET /config`: the tenant's settings, secret ones redacted.
pub(crate) async fn config(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (_, who) = api.context(&resolved, &headers, false).await?;
    let anonymous = who.is_anonymous();
    if anonymous && !api.plane().manifest().settings.iter().any(|s| s.anonymous) {
        return Err(ApiError::unauthorized());
    }
    Ok(Json(
        json!({ "settings": api.config(&resolved.tenant).listing(anonymous) }),
    ))
}
