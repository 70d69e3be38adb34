//! `GET /search`: the resolved tenant's search index, for the authenticated caller.
//!
//! Only the resolved tenant's copy is opened; hits are re-read through the caller's
//! permissions before they are returned (see [`bulkhead_search::query`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use bulkhead_model::ErrorCode;
use bulkhead_search::{SearchPage, SearchRequest};

use crate::api::{Api, for_caller};
use crate::error::ApiError;
use crate::resolve::ResolvedTenant;

/// `GET /search?q=…&entity=…&limit=…&cursor=…`.
pub(crate) async fn search(
    State(api): State<Arc<Api>>,
    axum::Extension(resolved): axum::Extension<ResolvedTenant>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<SearchPage>, ApiError> {
    let (ctx, who) = api.context(&resolved, &headers, false).await?;
    let pairs = crate::extract::query_pairs(raw.as_deref())?;
    let Some(indexes) = api.search_indexes() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "this app has no searchable fields",
        ));
    };
    let req = request(&pairs)?;
    match indexes.search(&ctx, &req).await {
        Ok(page) => Ok(Json(page)),
        // An anonymous caller refused is told to authenticate (`for_caller`); everything else
        // through the one mapping.
        Err(e) => Err(match e {
            bulkhead_search::Error::Forbidden(e) => for_caller(
                &who,
                bulkhead_pg::Error::Forbidden {
                    entity: e,
                    action: "read",
                    field: None,
                },
            ),
            bulkhead_search::Error::Database(e) => for_caller(&who, e),
            other => other.into(),
        }),
    }
}

fn request(pairs: &[(String, String)]) -> Result<SearchRequest, ApiError> {
    let mut req = SearchRequest::default();
    for (k, v) in pairs {
        let number = || {
            v.parse::<usize>().map_err(|_| {
                ApiError::new(ErrorCode::BadQuery, format!("{k} must be a number")).with_field(k)
            })
        };
        match k.as_str() {
            "q" => req.q = v.clone(),
            "entity" => req.entity = Some(v.clone()),
            "limit" => req.limit = Some(number()?),
            "cursor" => req.cursor = Some(v.clone()),
            _ => {
                return Err(ApiError::new(
                    ErrorCode::BadQuery,
                    format!("unknown parameter {k}; expected q, entity, limit, cursor"),
                )
                .with_field(k));
            }
        }
    }
    Ok(req)
}
