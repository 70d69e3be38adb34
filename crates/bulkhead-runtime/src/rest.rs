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
use bulkhead_model::{AppManifest, Entity, ErrorCode, FieldType};
use bulkhead_pg::{Actor, DataPlane, Direction, Filter, TenantContext};
use serde_json::{Value, json};

use crate::auth::{self, Authenticator, Principal};
use crate::context::AppContext;
use crate::error::ApiError;
use crate::resolve::ResolvedTenant;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Most records one bulk create takes.
pub const BULK_LIMIT: usize = 1000;

/// What the REST handlers share. App code holds it as router state but reaches tenant data
/// only through a request's [`Tenant`] extractor: every field is private, and nothing here
/// takes a tenant id from app code (invariants 1 and 11).
///
/// ```
/// // What app code may do with it: read the manifest it serves (these paths exist, so the
/// // two examples below fail for the reason they state).
/// fn manifest(api: &bulkhead_runtime::rest::Api) -> &bulkhead_model::AppManifest {
///     bulkhead_runtime::rest::manifest(api)
/// }
/// ```
///
/// ```compile_fail,E0616
/// // App code cannot mint a context for a tenant of its choosing: the data plane is private.
/// fn mint(api: &bulkhead_runtime::rest::Api, actor: bulkhead_pg::Actor) {
///     let other = bulkhead_model::TenantId::parse("other").unwrap();
///     let _ = api.plane.context(&other, actor);
/// }
/// ```
///
/// ```compile_fail,E0599
/// // Nor use another tenant's egress list, flags or settings: no method takes a tenant.
/// fn egress(api: &bulkhead_runtime::rest::Api) {
///     let other = bulkhead_model::TenantId::parse("other").unwrap();
///     let _ = api.http(&other);
/// }
/// ```
pub struct Api {
    plane: DataPlane,
    auth: Arc<dyn Authenticator>,
    /// The app's files, when it has a bucket.
    files: Option<crate::files::FilesApi>,
    /// Each tenant's flag and setting overrides.
    options: Arc<crate::options::OptionsStore>,
    /// The app's search indexes in this worker, when it has searchable fields.
    search: Option<bulkhead_search::SearchIndexes>,
    /// Outbound HTTP: deny by default, per-tenant and per-app allow-lists.
    http: Arc<crate::http::HttpOut>,
    openapi: Value,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("plane", &self.plane)
            .finish_non_exhaustive()
    }
}

impl Api {
    pub fn new(plane: DataPlane, auth: Arc<dyn Authenticator>) -> Self {
        let openapi = crate::openapi::document(plane.manifest());
        let app = plane.manifest().app.clone();
        Self {
            plane,
            auth,
            files: None,
            options: Arc::default(),
            search: None,
            http: Arc::new(crate::http::HttpOut::new(bulkhead_egress::Egress::new(
                app,
                bulkhead_egress::AllowList::default(),
                bulkhead_egress::EgressConfig::default(),
            ))),
            openapi,
        }
    }

    /// Serves the app's files from `files` (its bucket).
    pub fn with_files(mut self, files: Option<crate::files::FilesApi>) -> Self {
        self.files = files;
        self
    }

    /// Each tenant's flag and setting overrides, kept current by the worker.
    pub fn with_options(mut self, options: Arc<crate::options::OptionsStore>) -> Self {
        self.options = options;
        self
    }

    /// The app's search indexes in this worker.
    pub fn with_search(mut self, search: bulkhead_search::SearchIndexes) -> Self {
        self.search = Some(search);
        self
    }

    /// Outbound HTTP with the worker's egress settings and each tenant's list.
    pub fn with_http(mut self, http: Arc<crate::http::HttpOut>) -> Self {
        self.http = http;
        self
    }

    pub(crate) fn plane(&self) -> &DataPlane {
        &self.plane
    }

    pub(crate) fn files(&self) -> Option<&crate::files::FilesApi> {
        self.files.as_ref()
    }

    pub(crate) fn search_indexes(&self) -> Option<&bulkhead_search::SearchIndexes> {
        self.search.as_ref()
    }

    pub(crate) fn http_out(&self) -> &crate::http::HttpOut {
        &self.http
    }

    pub(crate) fn options_store(&self) -> &crate::options::OptionsStore {
        &self.options
    }

    /// Authenticates the request and mints its `TenantContext`.
    pub(crate) async fn context(
        &self,
        resolved: &ResolvedTenant,
        headers: &HeaderMap,
        write: bool,
    ) -> Result<(TenantContext, Principal), ApiError> {
        let has_credentials = auth::bearer(headers).is_some()
            || auth::cookie(headers, auth::SESSION_COOKIE).is_some();
        let principal = if !has_credentials && resolved.via.is_host() {
            // Public access: only for tenants named by the host, and only where the manifest
            // grants the `anonymous` role the action (checked inside TenantDb).
            Principal {
                subject: String::new(),
                roles: vec![bulkhead_model::ANONYMOUS_ROLE.to_owned()],
            }
        } else {
            auth::authenticate(self.auth.as_ref(), resolved, headers, write).await?
        };
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_owned);
        let ctx = self.plane.context(
            &resolved.tenant,
            Actor {
                user_id: (!principal.subject.is_empty()).then(|| principal.subject.clone()),
                request_id,
                roles: principal.roles.clone(),
            },
        )?;
        Ok((ctx, principal))
    }

    pub(crate) fn entity(&self, name: &str) -> Result<&Entity, ApiError> {
        self.plane.manifest().entity(name).ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownEntity, format!("unknown entity {name:?}"))
        })
    }
}

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

async fn openapi(State(api): State<Arc<Api>>) -> Json<Value> {
    Json(api.openapi.clone())
}

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
                let (field, dir) = match raw.strip_prefix('-') {
                    Some(f) => (f, Direction::Desc),
                    None => (raw.as_str(), Direction::Asc),
                };
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
                let v = || typed(entity, field, raw);
                p.filters.push(match op {
                    "eq" => Filter::Eq(field.to_owned(), v()?),
                    "ne" => Filter::Ne(field.to_owned(), v()?),
                    "lt" => Filter::Lt(field.to_owned(), v()?),
                    "lte" => Filter::Lte(field.to_owned(), v()?),
                    "gt" => Filter::Gt(field.to_owned(), v()?),
                    "gte" => Filter::Gte(field.to_owned(), v()?),
                    "contains" => Filter::Contains(field.to_owned(), raw.clone()),
                    "null" => Filter::IsNull(field.to_owned(), boolean(key, raw)?),
                    "in" => Filter::In(
                        field.to_owned(),
                        raw.split(',')
                            .map(|item| typed(entity, field, item))
                            .collect::<Result<_, _>>()?,
                    ),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unknown operator {other:?}; expected eq, ne, lt, lte, gt, gte, in, contains, null"
                        )));
                    }
                });
            }
        }
    }
    Ok(p)
}

/// An anonymous caller refused by permissions is told to authenticate (401), not 403.
pub(crate) fn for_caller(principal: &Principal, e: bulkhead_pg::Error) -> ApiError {
    let anonymous = principal
        .roles
        .iter()
        .all(|r| r == bulkhead_model::ANONYMOUS_ROLE);
    if anonymous && e.code() == ErrorCode::Forbidden {
        ApiError::unauthorized()
    } else {
        e.into()
    }
}

async fn list(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path(entity): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
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
    let page = q.fetch().await.map_err(|e| for_caller(&who, e))?;
    let mut body = json!({ "records": page.records, "next_cursor": page.next_cursor });
    if params.count {
        let mut c = db.query(&entity);
        if let Some(f) = filter {
            c = c.filter(f);
        }
        body["count"] = json!(c.count().await.map_err(|e| for_caller(&who, e))?);
    }
    Ok(Json(body))
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
) -> Result<Json<Value>, ApiError> {
    let (ctx, who) = api.context(&resolved, &headers, false).await?;
    api.entity(&entity)?;
    Ok(Json(
        ctx.db()
            .get(&entity, &id)
            .await
            .map_err(|e| for_caller(&who, e))?,
    ))
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

/// The data plane as the tenant directory of the resolution layer.
#[derive(Debug, Clone)]
pub struct PlaneDirectory(pub DataPlane);

impl crate::resolve::TenantDirectory for PlaneDirectory {
    fn is_active(&self, tenant: &bulkhead_model::TenantId) -> bool {
        self.0.is_active(tenant)
    }
}

/// The manifest an [`Api`] serves (for documentation tools).
pub fn manifest(api: &Api) -> &AppManifest {
    api.plane.manifest()
}

impl Api {
    /// The tenant directory of the resolution layer: the tenants this app's data plane serves.
    pub(crate) fn directory(&self) -> PlaneDirectory {
        PlaneDirectory(self.plane.clone())
    }
}

/// The extractor for app code's own handlers: the request's [`AppContext`] (its tenant-bound
/// handles: `db()`, `http()`, `flags()`, `config()`) and [`Principal`], minted only after tenant
/// resolution and token verification — the one way app code reaches tenant data. Mount the
/// handlers with [`crate::app`].
#[derive(Debug, Clone)]
pub struct Tenant(pub AppContext, pub Principal);

impl axum::extract::FromRequestParts<Arc<Api>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        api: &Arc<Api>,
    ) -> Result<Self, Self::Rejection> {
        let resolved = parts
            .extensions
            .get::<ResolvedTenant>()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::TenantNotFound, "not found"))?;
        let write = !parts.method.is_safe();
        let (ctx, who) = api.context(&resolved, &parts.headers, write).await?;
        Ok(Tenant(AppContext::new(ctx, who.clone(), api.clone()), who))
    }
}
