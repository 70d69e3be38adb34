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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_model::options::{Evaluation, TenantOptions, evaluate};
use bulkhead_model::{AppManifest, TenantId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::resolve::ResolvedTenant;
use crate::rest::Api;

/// One tenant's overrides and secret setting values.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    pub options: TenantOptions,
    /// Secret settings by name (from the vault); never listed.
    pub secrets: BTreeMap<String, Value>,
}

/// Every tenant's options, replaced as the worker's configuration changes.
#[derive(Debug, Default)]
pub struct OptionsStore(RwLock<HashMap<TenantId, Arc<LiveOptions>>>);

impl OptionsStore {
    pub fn set(&self, tenant: TenantId, options: LiveOptions) {
        if let Ok(mut map) = self.0.write() {
            map.insert(tenant, Arc::new(options));
        }
    }

    pub fn remove(&self, tenant: &TenantId) {
        if let Ok(mut map) = self.0.write() {
            map.remove(tenant);
        }
    }

    fn get(&self, tenant: &TenantId) -> Arc<LiveOptions> {
        self.0
            .read()
            .ok()
            .and_then(|m| m.get(tenant).cloned())
            .unwrap_or_default()
    }
}

/// The flags of one tenant for one caller.
#[derive(Debug)]
pub struct Flags<'a> {
    manifest: &'a AppManifest,
    live: Arc<LiveOptions>,
    tenant: TenantId,
    user: String,
    roles: Vec<String>,
}

impl Flags<'_> {
    /// The flag's value, why, and which branch; `None` for an undeclared flag.
    pub fn evaluate(&self, name: &str) -> Option<Evaluation> {
        let decl = self.manifest.flag(name)?;
        self.evaluate_decl(decl)
    }

    fn evaluate_decl(&self, decl: &bulkhead_model::FlagDecl) -> Option<Evaluation> {
        let name = decl.name.as_str();
        Some(evaluate(
            decl,
            self.live.options.flags.get(name),
            self.tenant.as_str(),
            &self.user,
            &self.roles,
        ))
    }

    /// A boolean flag (false when undeclared or not a boolean).
    pub fn enabled(&self, name: &str) -> bool {
        self.evaluate(name)
            .and_then(|e| e.value.as_bool())
            .unwrap_or(false)
    }

    /// Every flag `caller` may evaluate: all for a signed-in caller, only those the manifest
    /// marks `anonymous: true` for one without credentials.
    fn visible(&self, anonymous: bool) -> Vec<(String, Evaluation)> {
        self.manifest
            .flags
            .iter()
            .filter(|f| f.anonymous || !anonymous)
            .filter_map(|f| Some((f.name.to_string(), self.evaluate_decl(f)?)))
            .collect()
    }
}

/// The configuration of one tenant.
#[derive(Debug)]
pub struct Config<'a> {
    manifest: &'a AppManifest,
    live: Arc<LiveOptions>,
}

impl Config<'_> {
    /// The tenant's value of a setting, else the app's default; secret values included (for
    /// app code — never send them to clients).
    pub fn get(&self, name: &str) -> Option<Value> {
        let decl = self.manifest.setting(name)?;
        if decl.secret {
            return self.live.secrets.get(name).cloned();
        }
        self.live
            .options
            .settings
            .get(name)
            .cloned()
            .or_else(|| decl.default.clone())
    }

    /// Every setting, with secret ones redacted to `{"secret": true, "set": bool}`; for a
    /// caller without credentials only those the manifest marks `anonymous: true`.
    pub fn listing(&self, anonymous: bool) -> serde_json::Map<String, Value> {
        self.manifest
            .settings
            .iter()
            .filter(|d| d.anonymous || !anonymous)
            .map(|d| {
                let name = d.name.to_string();
                let value = if d.secret {
                    json!({"secret": true, "set": self.live.secrets.contains_key(&name)})
                } else {
                    self.get(&name).unwrap_or(Value::Null)
                };
                (name, value)
            })
            .collect()
    }
}

impl Api {
    /// The resolved tenant's flags as they apply to `caller`.
    pub(crate) fn flags(&self, tenant: &TenantId, caller: &Principal) -> Flags<'_> {
        Flags {
            manifest: self.plane().manifest(),
            live: self.options_store().get(tenant),
            tenant: tenant.clone(),
            user: caller.subject.clone(),
            roles: caller.roles.clone(),
        }
    }

    /// The resolved tenant's configuration.
    pub(crate) fn config(&self, tenant: &TenantId) -> Config<'_> {
        Config {
            manifest: self.plane().manifest(),
            live: self.options_store().get(tenant),
        }
    }
}

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
    if !crate::rest::is_json_request(headers) {
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
