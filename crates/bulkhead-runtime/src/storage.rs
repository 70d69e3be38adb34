//! The tenant's key-value storage over HTTP, for front-ends (the SDK's `storage`):
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/storage?prefix=p` , `/me/storage?prefix=p` | `{entries: [{key, value}]}` in key order |
//! | GET | `/storage/{*key}`, `/me/storage/{*key}` | `{key, value}`, 404 when unset |
//! | PUT | the same | stores the JSON body (204) |
//! | DELETE | the same | removes it (204, 404 when unset) |
//!
//! `/me/storage` is the signed-in user's own namespace. The tenant-wide `/storage` needs a role
//! the active bundle's manifest lists in `functions.storage.read` / `write` (none by default:
//! functions reach it and decide for their callers). Both go through `TenantKv`, so the tenant
//! is the resolved one and a key is only ever a key.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_model::ErrorCode;
use bulkhead_pg::plane::KvScope;
use serde_json::{Value, json};

use crate::api::{Api, for_caller};
use crate::context::AppContext;
use crate::error::ApiError;
use crate::extract::{json_body, query_pairs};
use crate::resolve::ResolvedTenant;

/// The caller's context for `scope`, refused unless the caller may `write` (or read) there.
async fn open(
    api: &Arc<Api>,
    resolved: &ResolvedTenant,
    headers: &HeaderMap,
    scope: KvScope,
    write: bool,
) -> Result<AppContext, ApiError> {
    let (ctx, principal) = api.context(resolved, headers, write).await?;
    if principal.is_anonymous() {
        return Err(ApiError::unauthorized());
    }
    if scope == KvScope::Tenant {
        let granted = api
            .deployments()
            .and_then(|d| d.current())
            .is_some_and(|d| d.functions.storage.allows(&principal.roles, write));
        if !granted {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                if write {
                    "your roles may not write the tenant's storage from a browser (functions.storage.write)"
                } else {
                    "your roles may not read the tenant's storage from a browser (functions.storage.read)"
                },
            ));
        }
    }
    Ok(AppContext::new(ctx, principal, api.clone()))
}

async fn list(
    api: Arc<Api>,
    resolved: ResolvedTenant,
    headers: HeaderMap,
    raw: Option<String>,
    scope: KvScope,
) -> Result<Json<Value>, ApiError> {
    let mut prefix = String::new();
    for (k, v) in query_pairs(raw.as_deref())? {
        match k.as_str() {
            "prefix" => prefix = v,
            other => {
                return Err(
                    ApiError::bad_request(format!("unknown parameter {other:?}")).with_field(other),
                );
            }
        }
    }
    let ctx = open(&api, &resolved, &headers, scope, false).await?;
    let entries = ctx
        .kv(scope)
        .list(&prefix)
        .await
        .map_err(|e| for_caller(ctx.caller(), e))?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

async fn get(
    api: Arc<Api>,
    resolved: ResolvedTenant,
    headers: HeaderMap,
    key: String,
    scope: KvScope,
) -> Result<Json<Value>, ApiError> {
    let ctx = open(&api, &resolved, &headers, scope, false).await?;
    match ctx
        .kv(scope)
        .get(&key)
        .await
        .map_err(|e| for_caller(ctx.caller(), e))?
    {
        Some(value) => Ok(Json(json!({"key": key, "value": value}))),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "no value under this key",
        )),
    }
}

async fn put(
    api: Arc<Api>,
    resolved: ResolvedTenant,
    headers: HeaderMap,
    key: String,
    body: Bytes,
    scope: KvScope,
) -> Result<Response, ApiError> {
    let value = json_body(&headers, &body)?;
    if value.is_null() {
        return Err(ApiError::new(
            ErrorCode::MissingField,
            "a stored value is not null (DELETE removes one)",
        ));
    }
    let ctx = open(&api, &resolved, &headers, scope, true).await?;
    ctx.kv(scope)
        .set(&key, &value)
        .await
        .map_err(|e| for_caller(ctx.caller(), e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove(
    api: Arc<Api>,
    resolved: ResolvedTenant,
    headers: HeaderMap,
    key: String,
    scope: KvScope,
) -> Result<Response, ApiError> {
    let ctx = open(&api, &resolved, &headers, scope, true).await?;
    let gone = ctx
        .kv(scope)
        .delete(&key)
        .await
        .map_err(|e| for_caller(ctx.caller(), e))?;
    if gone {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            "no value under this key",
        ))
    }
}

/// The handlers of one scope, as axum wants them (a scope per route, not per request).
macro_rules! scoped {
    ($list:ident, $get:ident, $put:ident, $remove:ident, $scope:expr) => {
        pub(crate) async fn $list(
            State(api): State<Arc<Api>>,
            Extension(resolved): Extension<ResolvedTenant>,
            headers: HeaderMap,
            RawQuery(raw): RawQuery,
        ) -> Result<Json<Value>, ApiError> {
            list(api, resolved, headers, raw, $scope).await
        }
        pub(crate) async fn $get(
            State(api): State<Arc<Api>>,
            Extension(resolved): Extension<ResolvedTenant>,
            headers: HeaderMap,
            Path(key): Path<String>,
        ) -> Result<Json<Value>, ApiError> {
            get(api, resolved, headers, key, $scope).await
        }
        pub(crate) async fn $put(
            State(api): State<Arc<Api>>,
            Extension(resolved): Extension<ResolvedTenant>,
            headers: HeaderMap,
            Path(key): Path<String>,
            body: Bytes,
        ) -> Result<Response, ApiError> {
            put(api, resolved, headers, key, body, $scope).await
        }
        pub(crate) async fn $remove(
            State(api): State<Arc<Api>>,
            Extension(resolved): Extension<ResolvedTenant>,
            headers: HeaderMap,
            Path(key): Path<String>,
        ) -> Result<Response, ApiError> {
            remove(api, resolved, headers, key, $scope).await
        }
    };
}

scoped!(
    tenant_list,
    tenant_get,
    tenant_put,
    tenant_remove,
    KvScope::Tenant
);
scoped!(user_list, user_get, user_put, user_remove, KvScope::User);
