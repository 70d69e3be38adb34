//! The tenant files API: upload, download, list and delete in the app's bucket under the
//! resolved tenant's prefix, and signed download URLs bound to tenant, object and expiry.
//!
//! Keys are validated by `bulkhead_files::check_key` before any I/O. A key that starts with a
//! tenant entity's name must be `<entity>/<row id>/<name>`: the file belongs to that row and
//! obeys its permissions (reading the file needs the row to be readable by the caller; writing
//! or deleting it also needs update rights on the row). Other keys are the tenant's own files,
//! for any signed-in user of the tenant.
//!
//! Downloads are always `application/octet-stream` with `Content-Disposition: attachment` and
//! `nosniff`, so an uploaded file is never rendered by the browser in the app's origin.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bulkhead_files::check_key;
use bulkhead_model::ErrorCode;
use bulkhead_model::manifest::{Action, Scope};
use bulkhead_pg::TenantContext;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::Api;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::resolve::ResolvedTenant;

use crate::file_store::CONTENT_TYPES;
pub use crate::file_store::{DEFAULT_MAX_BYTES, FilesApi, MAX_SIGNED_SECS, content_types};

fn files_of(api: &Api) -> Result<&FilesApi, ApiError> {
    api.files().ok_or_else(|| ApiError {
        code: ErrorCode::NotFound,
        message: "this app has no file storage".into(),
        field: None,
    })
}

fn bad_key(key: &str) -> ApiError {
    ApiError {
        code: ErrorCode::BadQuery,
        message: format!(
            "invalid file key {key:?}: use segments of [A-Za-z0-9._-] separated by '/', no '.' or '..'"
        ),
        field: Some("key".into()),
    }
}

fn storage(e: bulkhead_files::Error) -> ApiError {
    e.into()
}

/// The row a key belongs to, when its first segment names a tenant entity.
fn owning_row<'k>(api: &Api, key: &'k str) -> Result<Option<(&'k str, &'k str)>, ApiError> {
    let segments = check_key(key).map_err(|_| bad_key(key))?;
    let Some(entity) = api.plane().manifest().entity(segments[0]) else {
        return Ok(None);
    };
    if !entity.is_tenant_scoped() {
        return Ok(None);
    }
    match segments.as_slice() {
        [e, id, _, ..] => Ok(Some((e, id))),
        _ => Err(ApiError {
            code: ErrorCode::BadQuery,
            message: format!(
                "files of {} are keyed <entity>/<row id>/<name>",
                segments[0]
            ),
            field: Some("key".into()),
        }),
    }
}

/// Refuses access to an entity row's file unless the caller may read the row — and, for
/// writes, update it.
async fn check_row(
    api: &Api,
    ctx: &TenantContext,
    who: &Principal,
    key: &str,
    write: bool,
) -> Result<(), ApiError> {
    let Some((entity, id)) = owning_row(api, key)? else {
        return Ok(());
    };
    let row = ctx
        .db()
        .get(entity, id)
        .await
        .map_err(|e| crate::api::for_caller(who, e))?;
    if write {
        let e = api.entity(entity)?;
        let forbidden = || ApiError {
            code: ErrorCode::Forbidden,
            message: format!("you may not change files of this {entity}"),
            field: None,
        };
        match e.effective(&who.roles, Action::Update).scope {
            Scope::All => {}
            Scope::None => return Err(forbidden()),
            Scope::Own => {
                let owner = e.owner.as_ref().map(|o| row[o.as_str()].clone());
                if owner != Some(Value::from(who.subject.as_str())) {
                    return Err(forbidden());
                }
            }
        }
    }
    Ok(())
}

/// A signed-in caller of the resolved tenant (files have no anonymous access).
async fn signed_in(
    api: &Api,
    resolved: &ResolvedTenant,
    headers: &HeaderMap,
    write: bool,
) -> Result<(TenantContext, Principal), ApiError> {
    let (ctx, who) = api.context(resolved, headers, write).await?;
    if who.subject.is_empty() {
        return Err(ApiError {
            code: ErrorCode::Unauthorized,
            message: "sign in to use files".into(),
            field: None,
        });
    }
    Ok((ctx, who))
}

/// `GET /files`: the tenant's files the caller may read.
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (ctx, who) = signed_in(&api, &resolved, &headers, false).await?;
    let visible = AppFiles::new(&api, &ctx, &who).list().await?;
    Ok(Json(json!({ "files": visible })))
}

/// App code's files (the mini-apps' `files` object): the context's tenant prefix only, the
/// same key rules and row permissions as the HTTP API, for a signed-in caller.
pub(crate) struct AppFiles<'a> {
    api: &'a Api,
    ctx: &'a TenantContext,
    who: &'a Principal,
}

impl<'a> AppFiles<'a> {
    pub(crate) fn new(api: &'a Api, ctx: &'a TenantContext, who: &'a Principal) -> Self {
        Self { api, ctx, who }
    }

    fn bucket(&self) -> Result<bulkhead_files::TenantFiles, ApiError> {
        let files = files_of(self.api)?;
        if self.who.subject.is_empty() {
            return Err(ApiError {
                code: ErrorCode::Unauthorized,
                message: "sign in to use files".into(),
                field: None,
            });
        }
        Ok(files.bucket.tenant(self.ctx.tenant()))
    }

    /// The tenant's files the caller may read.
    pub(crate) async fn list(&self) -> Result<Vec<String>, ApiError> {
        let keys = self.bucket()?.list().await.map_err(storage)?;
        let mut visible = Vec::new();
        let mut readable: std::collections::HashMap<(String, String), bool> = Default::default();
        for key in keys {
            let ok = match owning_row(self.api, &key) {
                Ok(None) => true,
                Ok(Some((e, id))) => match readable.get(&(e.to_owned(), id.to_owned())) {
                    Some(ok) => *ok,
                    None => {
                        let ok = self.ctx.db().get(e, id).await.is_ok();
                        readable.insert((e.to_owned(), id.to_owned()), ok);
                        ok
                    }
                },
                Err(_) => false,
            };
            if ok {
                visible.push(key);
            }
        }
        Ok(visible)
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Bytes, ApiError> {
        let bucket = self.bucket()?;
        check_key(key).map_err(|_| bad_key(key))?;
        check_row(self.api, self.ctx, self.who, key, false).await?;
        bucket.get(key).await.map_err(storage)
    }

    pub(crate) async fn put(&self, key: &str, bytes: Bytes) -> Result<(), ApiError> {
        let bucket = self.bucket()?;
        let limit = files_of(self.api)?.max_bytes;
        check_key(key).map_err(|_| bad_key(key))?;
        check_row(self.api, self.ctx, self.who, key, true).await?;
        bucket.put(key, bytes, limit).await.map_err(storage)
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), ApiError> {
        let bucket = self.bucket()?;
        check_key(key).map_err(|_| bad_key(key))?;
        check_row(self.api, self.ctx, self.who, key, true).await?;
        bucket.delete(key).await.map_err(storage)
    }
}

/// The `exp` and `sig` of a signed link, parsed by hand so that a malformed query is an
/// invalid link (a JSON 401), never a framework rejection.
fn signed_params(query: Option<&str>) -> Option<(Option<u64>, String)> {
    let mut exp = None;
    let mut sig = None;
    for pair in query.unwrap_or_default().split('&') {
        match pair.split_once('=') {
            Some(("exp", v)) => exp = Some(v.parse::<u64>().ok()),
            Some(("sig", v)) => sig = Some(v.to_owned()),
            _ => {}
        }
    }
    match (exp, sig) {
        (None, None) => None,
        (exp, sig) => Some((exp.flatten(), sig.unwrap_or_default())),
    }
}

/// `GET /files/{key}`: with a bearer token or session, or with a valid `exp` + `sig`.
pub(crate) async fn download(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let files = files_of(&api)?;
    check_key(&key).map_err(|_| bad_key(&key))?;
    match signed_params(query.as_deref()) {
        Some((exp, sig)) => {
            let valid = exp.is_some_and(|exp| {
                exp >= crate::auth::now() && files.verify(resolved.tenant.as_str(), &key, exp, &sig)
            });
            if !valid {
                return Err(ApiError {
                    code: ErrorCode::Unauthorized,
                    message: "the link is invalid or has expired".into(),
                    field: None,
                });
            }
        }
        None => {
            let (ctx, who) = signed_in(&api, &resolved, &headers, false).await?;
            check_row(&api, &ctx, &who, &key, false).await?;
        }
    }
    let bytes = files
        .bucket
        .tenant(&resolved.tenant)
        .get(&key)
        .await
        .map_err(storage)?;
    let name = key.rsplit('/').next().unwrap_or("file");
    let mut response = Response::new(Body::from(bytes));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// `PUT /files/{key}`: stores the body (size limit, declared content type checked against
/// the content).
pub(crate) async fn upload(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let files = files_of(&api)?;
    let (ctx, who) = signed_in(&api, &resolved, &headers, true).await?;
    check_row(&api, &ctx, &who, &key, true).await?;
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let Some((_, magic)) = CONTENT_TYPES.iter().find(|(t, _)| *t == declared) else {
        return Err(ApiError {
            code: ErrorCode::UnsupportedMediaType,
            message: format!(
                "content type {declared:?} is not accepted; use one of {}",
                CONTENT_TYPES
                    .iter()
                    .map(|(t, _)| *t)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            field: Some("content-type".into()),
        });
    };
    // The signature is checked on the first bytes, then the body streams to the store; a
    // body over the limit is refused and nothing is kept.
    let mut stream = body.into_data_stream();
    let mut head = Vec::new();
    while head.len() < magic.len() {
        match futures_util::TryStreamExt::try_next(&mut stream).await {
            Ok(Some(chunk)) => head.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(e) => return Err(storage(bulkhead_files::Error::Body(e.to_string()))),
        }
    }
    if !head.starts_with(magic) {
        return Err(ApiError {
            code: ErrorCode::UnsupportedMediaType,
            message: format!("the content is not {declared}"),
            field: Some("content-type".into()),
        });
    }
    let first = futures_util::stream::once(async move { Ok::<_, axum::Error>(Bytes::from(head)) });
    let rest = futures_util::StreamExt::chain(first, stream);
    let size = files
        .bucket
        .tenant(&resolved.tenant)
        .put_stream(&key, Box::pin(rest), files.max_bytes)
        .await
        .map_err(storage)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key": key, "size": size })),
    )
        .into_response())
}

/// `DELETE /files/{key}`.
pub(crate) async fn remove(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    let files = files_of(&api)?;
    let (ctx, who) = signed_in(&api, &resolved, &headers, true).await?;
    check_row(&api, &ctx, &who, &key, true).await?;
    files
        .bucket
        .tenant(&resolved.tenant)
        .delete(&key)
        .await
        .map_err(storage)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(crate) struct SignRequest {
    key: String,
    #[serde(default = "default_expiry")]
    expires_in: u64,
}

fn default_expiry() -> u64 {
    300
}

/// `POST /files-signed` `{"key", "expires_in"}`: a download link for the caller's tenant,
/// valid for `expires_in` seconds (at most a day), for a file the caller may read.
pub(crate) async fn sign(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let files = files_of(&api)?;
    let (ctx, who) = signed_in(&api, &resolved, &headers, false).await?;
    let req: SignRequest = serde_json::from_value(crate::extract::json_body(&headers, &body)?)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"key\", \"expires_in\"}}: {e}")))?;
    check_key(&req.key).map_err(|_| bad_key(&req.key))?;
    check_row(&api, &ctx, &who, &req.key, false).await?;
    let exp = crate::auth::now() + req.expires_in.clamp(1, MAX_SIGNED_SECS);
    let sig = files.sign(resolved.tenant.as_str(), &req.key, exp);
    Ok(Json(json!({
        "path": format!("files/{}?exp={exp}&sig={sig}", req.key),
        "expires_at": exp,
    })))
}
