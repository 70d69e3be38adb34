//! The REST API of one app, generated from its manifest and served through `TenantDb`.
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/api/{entity}` | list: `field=v`, `field[op]=v` (`ne lt lte gt gte in contains null`), `order=field` or `-field`, `limit`, `after`, `count=true` |
//! | POST | `/api/{entity}` | create one (201) |
//! | POST | `/api/{entity}/_bulk` | create up to 1000 in one transaction (201) |
//! | GET / PATCH / DELETE | `/api/{entity}/{id}` | get, patch, delete (204) |
//! | GET | `/openapi.json` | the OpenAPI 3.1 document of exactly this API |
//!
//! Mount the router inside a [`crate::TenantLayer`]; every handler needs a resolved tenant and
//! a principal verified by that tenant's realm.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bulkhead_model::{Entity, ErrorCode, FieldType};
use bulkhead_pg::plane::KvScope;
use bulkhead_pg::{Direction, Filter};
use serde_json::{Value, json};

use crate::api::for_caller;
pub use crate::api::{Api, PlaneDirectory, manifest};
pub use crate::context::Tenant;
use crate::error::ApiError;
use crate::extract::{json_body, query_pairs};
use crate::resolve::ResolvedTenant;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Most records one bulk create takes.
pub const BULK_LIMIT: usize = 1000;

/// The app's routes. Wrap with [`crate::TenantLayer`].
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/openapi.json", get(openapi))
        .route("/api/{entity}", get(list).post(create))
        .route("/api/{entity}/_bulk", axum::routing::post(bulk_create))
        .route("/api/{entity}/{id}", get(read).patch(patch).delete(remove))
        .route("/files", get(crate::files::list))
        .route("/config", get(crate::options::config))
        .route("/search", get(crate::search::search))
        .route(
            "/ofrep/v1/evaluate/flags",
            axum::routing::post(crate::options::evaluate_all),
        )
        .route(
            "/ofrep/v1/evaluate/flags/{key}",
            axum::routing::post(crate::options::evaluate_one),
        )
        .route("/files-signed", axum::routing::post(crate::files::sign))
        .route("/fn/{*route}", axum::routing::any(crate::functions::invoke))
        .route("/app", get(crate::functions::app_root))
        .route("/app/", get(crate::functions::static_file))
        .route("/app/{*file}", get(crate::functions::static_file))
        .route("/sdk/bulkhead.js", get(crate::sdk::script))
        .route("/sdk/session", get(crate::sdk::session))
        .route("/me", get(crate::sdk::me))
        .route(
            "/storage",
            get(crate::storage::list).layer(Extension(KvScope::Tenant)),
        )
        .route(
            "/storage/{*key}",
            get(crate::storage::get)
                .put(crate::storage::put)
                .delete(crate::storage::remove)
                .layer(Extension(KvScope::Tenant)),
        )
        .route(
            "/me/storage",
            get(crate::storage::list).layer(Extension(KvScope::User)),
        )
        .route(
            "/me/storage/{*key}",
            get(crate::storage::get)
                .put(crate::storage::put)
                .delete(crate::storage::remove)
                .layer(Extension(KvScope::User)),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Uploads stream under the files API's own limit.
        .route(
            "/files/{*key}",
            get(crate::files::download)
                .put(crate::files::upload)
                .delete(crate::files::remove),
        )
        .with_state(api)
}

async fn openapi(
    State(api): State<Arc<Api>>,
    resolved: Option<Extension<ResolvedTenant>>,
) -> Json<Value> {
    let mut doc = api.openapi().clone();
    // The active bundle's function routes, as they are served now.
    if let Some(deployed) = api.deployments().and_then(|d| d.current()) {
        crate::openapi::add_function_routes(&mut doc, &deployed.functions);
    }
    if let Some(Extension(resolved)) = resolved {
        doc = crate::openapi::for_tenant(doc, resolved.tenant.as_str());
    }
    Json(doc)
}

/// `true` or `false`, and nothing else.
fn boolean(name: &str, raw: &str) -> Result<bool, ApiError> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad_request(format!("{name} must be true or false")).with_field(name)),
    }
}

/// A query-string value as the JSON value the field's type expects.
fn typed(entity: &Entity, field: &str, raw: &str) -> Result<Value, ApiError> {
    let ty = match field {
        "id" => FieldType::Uuid,
        "created_at" | "updated_at" => FieldType::Timestamp,
        _ => entity
            .field(field)
            .map(|f| f.ty.clone())
            .ok_or_else(|| ApiError {
                code: ErrorCode::UnknownField,
                message: format!("{} has no field {field:?}", entity.name),
                field: Some(field.to_owned()),
            })?,
    };
    let wrong = |what: &str| ApiError {
        code: ErrorCode::WrongType,
        message: format!("{field}: expected {what}"),
        field: Some(field.to_owned()),
    };
    Ok(match ty {
        FieldType::Int | FieldType::Bigint => {
            Value::from(raw.parse::<i64>().map_err(|_| wrong("an integer"))?)
        }
        FieldType::Bool => Value::from(match raw {
            "true" => true,
            "false" => false,
            _ => return Err(wrong("true or false")),
        }),
        FieldType::Json => {
            return Err(ApiError::bad_request(format!(
                "{field} is json and cannot be filtered"
            )));
        }
        _ => Value::from(raw),
    })
}

struct ListParams {
    filters: Vec<Filter>,
    order: Option<(String, Direction)>,
    limit: Option<i64>,
    after: Option<String>,
    count: bool,
}

fn list_params(entity: &Entity, pairs: &[(String, String)]) -> Result<ListParams, ApiError> {
    let mut p = ListParams {
        filters: Vec::new(),
        order: None,
        limit: None,
        after: None,
        count: false,
    };
    for (key, raw) in pairs {
        match key.as_str() {
            "order" => {
                let (field, dir) = bulkhead_pg::sql::order(raw);
                p.order = Some((field.to_owned(), dir));
            }
            "limit" => {
                p.limit = Some(raw.parse().map_err(|_| {
                    ApiError::bad_request("limit must be an integer").with_field("limit")
                })?)
            }
            "after" => p.after = Some(raw.clone()),
            "count" => p.count = boolean("count", raw)?,
            _ => {
                let (field, op) = match key.split_once('[') {
                    Some((f, rest)) => (
                        f,
                        rest.strip_suffix(']').ok_or_else(|| {
                            ApiError::bad_request(format!("malformed parameter {key:?}"))
                        })?,
                    ),
                    None => (key.as_str(), "eq"),
                };
                if !bulkhead_pg::sql::OPERATORS.contains(&op) {
                    return Err(ApiError::bad_request(format!(
                        "unknown operator {op:?}; expected {}",
                        bulkhead_pg::sql::OPERATORS.join(", ")
                    )));
                }
                let value = match op {
                    "contains" => Value::String(raw.clone()),
                    "null" => Value::Bool(boolean(key, raw)?),
                    "in" => Value::Array(
                        raw.split(',')
                            .map(|item| typed(entity, field, item))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => typed(entity, field, raw)?,
                };
                p.filters
                    .push(Filter::with_operator(field, op, value).map_err(ApiError::bad_request)?);
            }
        }
    }
    Ok(p)
}

async fn list(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path(entity): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (ctx, who) = api.context(&resolved, &headers, false).await?;
    let e = api.entity(&entity)?;
    let params = list_params(e, &query_pairs(raw.as_deref())?)?;
    let db = ctx.db();
    let filter = (!params.filters.is_empty()).then(|| Filter::And(params.filters.clone()));
    let mut q = db.query(&entity);
    if let Some(f) = filter.clone() {
        q = q.filter(f);
    }
    if let Some((field, dir)) = &params.order {
        q = q.order_by(field, *dir);
    }
    if let Some(limit) = params.limit {
        q = q.limit(limit);
    }
    if let Some(after) = &params.after {
        q = q.after(after);
    }
    // The records arrive as JSON text and pass through as they are (no value per record).
    let page = q.fetch_json().await.map_err(|e| for_caller(&who, e))?;
    let count = if params.count {
        let mut c = db.query(&entity);
        if let Some(f) = filter {
            c = c.filter(f);
        }
        Some(c.count().await.map_err(|e| for_caller(&who, e))?)
    } else {
        None
    };
    // `{"count":…,"next_cursor":…,"records":[…]}`: the keys in the order a JSON map of them
    // would be written.
    let mut body = Vec::with_capacity(page.records.len() + 96);
    body.push(b'{');
    if let Some(n) = count {
        body.extend_from_slice(format!("\"count\":{n},").as_bytes());
    }
    body.extend_from_slice(b"\"next_cursor\":");
    serde_json::to_writer(&mut body, &page.next_cursor).map_err(|e| {
        ApiError::new(
            bulkhead_model::ErrorCode::Internal,
            format!("writing a page: {e}"),
        )
    })?;
    body.extend_from_slice(b",\"records\":");
    body.extend_from_slice(&page.records);
    body.push(b'}');
    Ok(json_text(body))
}

/// A 200 response of JSON text written already.
fn json_text(body: Vec<u8>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn create(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path(entity): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (ctx, who) = api.context(&resolved, &headers, true).await?;
    api.entity(&entity)?;
    let record = json_body(&headers, &body)?;
    let created = ctx
        .db()
        .insert(&entity, &record)
        .await
        .map_err(|e| for_caller(&who, e))?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn bulk_create(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path(entity): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (ctx, who) = api.context(&resolved, &headers, true).await?;
    api.entity(&entity)?;
    let Value::Array(records) = json_body(&headers, &body)? else {
        return Err(ApiError::bad_request("a bulk create takes a JSON array"));
    };
    if records.is_empty() || records.len() > BULK_LIMIT {
        return Err(ApiError::bad_request(format!(
            "a bulk create takes 1 to {BULK_LIMIT} records"
        )));
    }
    let created = ctx
        .db()
        .insert_many(&entity, &records)
        .await
        .map_err(|e| for_caller(&who, e))?;
    Ok((StatusCode::CREATED, Json(json!({ "records": created }))).into_response())
}

async fn read(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path((entity, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (ctx, who) = api.context(&resolved, &headers, false).await?;
    api.entity(&entity)?;
    // Written as JSON text from the row and passed on (no value built and serialised again).
    let record = ctx
        .db()
        .get_json(&entity, &id)
        .await
        .map_err(|e| for_caller(&who, e))?;
    Ok(json_text(record))
}

async fn patch(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path((entity, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let (ctx, who) = api.context(&resolved, &headers, true).await?;
    api.entity(&entity)?;
    let patch = json_body(&headers, &body)?;
    Ok(Json(
        ctx.db()
            .update(&entity, &id, &patch)
            .await
            .map_err(|e| for_caller(&who, e))?,
    ))
}

async fn remove(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path((entity, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (ctx, who) = api.context(&resolved, &headers, true).await?;
    api.entity(&entity)?;
    ctx.db()
        .delete(&entity, &id)
        .await
        .map_err(|e| for_caller(&who, e))?;
    Ok(StatusCode::NO_CONTENT)
}
