//! The admin HTTP API on the gateway, for operators' tools: a tenant's flags and settings,
//! and search rebuilds, with the same validation and audit as the CLI (`bulkhead flags`,
//! `bulkhead config`, `bulkhead search`).
//!
//! Enabled only when `[serve] admin_token_file` is set; every request needs
//! `Authorization: Bearer <the token in that file>`. Errors are the runtime's JSON errors.
//!
//! - `GET  /admin/v1/apps/{app}/tenants` — each tenant's level, status, data residency and
//!   egress allow-list
//! - `GET  /admin/v1/apps/{app}/tenants/{tenant}/flags`
//! - `PUT  /admin/v1/apps/{app}/tenants/{tenant}/flags/{name}` — body: an override
//!   (`{"value": …, "rules": […], "rollout": {…}}`) or `null` to clear
//! - `GET  /admin/v1/apps/{app}/tenants/{tenant}/config`
//! - `PUT  /admin/v1/apps/{app}/tenants/{tenant}/config/{name}` — body: `{"value": …}`,
//!   `{"value": null}` to clear
//! - `POST /admin/v1/apps/{app}/search/rebuild` — body: `{"tenant": "…"}`, or `{}` for all

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use bulkhead_control::platform::Platform;
use bulkhead_model::options::FlagOverride;
use bulkhead_model::{AppManifest, ErrorCode, TenantId};
use bulkhead_runtime::error::ApiError;
use serde_json::{Value, json};

/// The admin API's state: its own platform connection and its token.
pub struct AdminApi {
    platform: tokio::sync::Mutex<Platform>,
    token: crate::bearer::BearerToken,
}

impl std::fmt::Debug for AdminApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminApi").finish_non_exhaustive()
    }
}

impl AdminApi {
    /// `token` is the shared secret; only its SHA-256 digest is kept.
    pub fn new(mut platform: Platform, token: &str) -> crate::error::Result<Self> {
        let token = crate::bearer::BearerToken::new(token, "the admin token")?;
        platform.actor = "admin-api".into();
        Ok(Self {
            platform: tokio::sync::Mutex::new(platform),
            token,
        })
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.token.check(headers)
    }
}

pub fn router(admin: Arc<AdminApi>) -> Router {
    Router::new()
        .route("/admin/v1/apps/{app}/tenants", get(tenants))
        .route("/admin/v1/apps/{app}/tenants/{tenant}/flags", get(flags))
        .route(
            "/admin/v1/apps/{app}/tenants/{tenant}/flags/{name}",
            put(set_flag),
        )
        .route(
            "/admin/v1/apps/{app}/tenants/{tenant}/config",
            get(settings),
        )
        .route(
            "/admin/v1/apps/{app}/tenants/{tenant}/config/{name}",
            put(set_setting),
        )
        .route("/admin/v1/apps/{app}/search/rebuild", post(rebuild))
        .with_state(admin)
}

impl AdminApi {
    /// Authenticates the request and takes the platform with `app`'s manifest.
    async fn open(
        &self,
        headers: &HeaderMap,
        app: &str,
    ) -> Result<(tokio::sync::MutexGuard<'_, Platform>, AppManifest), ApiError> {
        self.check(headers)?;
        let p = self.platform.lock().await;
        let m = crate::platform::manifest_of(&p, app)
            .await
            .map_err(|_| ApiError::new(ErrorCode::NotFound, format!("app {app} not found")))?;
        Ok((p, m))
    }
}

fn control(e: bulkhead_control::Error) -> ApiError {
    e.into()
}

fn bad(field: &str, message: String) -> ApiError {
    ApiError::bad_request(message).with_field(field)
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|e| bad("tenant", e.to_string()))
}

async fn tenants(
    State(admin): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (p, m) = admin.open(&headers, &app).await?;
    let rows: Vec<Value> = bulkhead_control::registry::tenants(&p.client, &m.app)
        .await
        .map_err(control)?
        .into_iter()
        .map(|t| {
            json!({"id": t.id, "isolation": t.isolation, "status": t.status,
                   "data_residency": t.residency, "network": t.network})
        })
        .collect();
    Ok(Json(json!({ "tenants": rows })))
}

async fn flags(
    State(admin): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path((app, tenant)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (p, m) = admin.open(&headers, &app).await?;
    let rows = p
        .tenant_flags(&m, &tenant_id(&tenant)?)
        .await
        .map_err(control)?;
    Ok(Json(json!({ "flags": rows })))
}

async fn set_flag(
    State(admin): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path((app, tenant, name)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut p, m) = admin.open(&headers, &app).await?;
    let over: Option<FlagOverride> =
        serde_json::from_slice(&body).map_err(|e| bad(&format!("flags.{name}"), e.to_string()))?;
    let t = tenant_id(&tenant)?;
    p.set_tenant_flag(&m, &t, &name, over.as_ref())
        .await
        .map_err(control)?;
    let rows = p.tenant_flags(&m, &t).await.map_err(control)?;
    Ok(Json(json!({ "flags": rows })))
}

async fn settings(
    State(admin): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path((app, tenant)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let (p, m) = admin.open(&headers, &app).await?;
    let rows = p
        .tenant_settings(&m, &tenant_id(&tenant)?)
        .await
        .map_err(control)?;
    Ok(Json(json!({ "settings": rows })))
}

async fn set_setting(
    State(admin): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path((app, tenant, name)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut p, m) = admin.open(&headers, &app).await?;
    let body: Value =
        serde_json::from_slice(&body).map_err(|e| bad("value", format!("body: {e}")))?;
    let Some(value) = body.get("value") else {
        return Err(bad("value", "the body is {\"value\": …}".into()));
    };
    let t = tenant_id(&tenant)?;
    let value = (!value.is_null()).then_some(value);
    p.set_tenant_setting(&m, &t, &name, value)
        .await
        .map_err(control)?;
    let rows = p.tenant_settings(&m, &t).await.map_err(control)?;
    Ok(Json(json!({ "settings": rows })))
}

async fn rebuild(
    State(admin): State<Arc<AdminApi>>,
    headers: HeaderMap,
    Path(app): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let (mut p, m) = admin.open(&headers, &app).await?;
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body).map_err(|e| bad("tenant", format!("body: {e}")))?
    };
    let tenant = match body.get("tenant") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(tenant_id(t)?),
        Some(_) => return Err(bad("tenant", "tenant must be a string".into())),
    };
    let asked = p
        .request_search_rebuild(&m, tenant.as_ref())
        .await
        .map_err(control)?;
    Ok(Json(json!({ "rebuild_requested": asked })))
}
