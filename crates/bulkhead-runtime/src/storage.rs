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
//! is the resolved one and a key is only ever a key. The scope comes from the route (an
//! `Extension<KvScope>` layer in `rest.rs`), never from the request.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_model::ErrorCode;
use bulkhead_pg::plane::{KvScope, TenantContext};
use serde_json::{Value, json};

use crate::api::{Api, for_caller};
use crate::auth::Principal;
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
) -> Result<(TenantContext, Principal), ApiError> {
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
    Ok((ctx, principal))
}

pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    Extension(scope): Extension<KvScope>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
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
    let (ctx, caller) = open(&api, &resolved, &headers, scope, false).await?;
    let entries = ctx
        .kv(scope)
        .list(&prefix)
        .await
        .map_err(|e| for_caller(&caller, e))?;
    let entries: Vec<Value> = entries
        .into_iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    Ok(Json(json!({ "entries": entries })))
}

pub(crate) async fn get(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    Extension(scope): Extension<KvScope>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (ctx, caller) = open(&api, &resolved, &headers, scope, false).await?;
    match ctx
        .kv(scope)
        .get(&key)
        .await
        .map_err(|e| for_caller(&caller, e))?
    {
        Some(value) => Ok(Json(json!({"key": key, "value": value}))),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            "no value under this key",
        )),
    }
}

pub(crate) async fn put(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    Extension(scope): Extension<KvScope>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let value = json_body(&headers, &body)?;
    if value.is_null() {
        return Err(ApiError::new(
            ErrorCode::MissingField,
            "a stored value is not null (DELETE removes one)",
        ));
    }
    let (ctx, caller) = open(&api, &resolved, &headers, scope, true).await?;
    ctx.kv(scope)
        .set(&key, &value)
        .await
        .map_err(|e| for_caller(&caller, e))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(crate) async fn remove(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    Extension(scope): Extension<KvScope>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let (ctx, caller) = open(&api, &resolved, &headers, scope, true).await?;
    let gone = ctx
        .kv(scope)
        .delete(&key)
        .await
        .map_err(|e| for_caller(&caller, e))?;
    if gone {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            ErrorCode::NotFound,
            "no value under this key",
        ))
    }
}
