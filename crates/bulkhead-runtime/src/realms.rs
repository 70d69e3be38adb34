//! The HTTP face of local realms, one per tenant, at `/realms/{tenant}/…`: discovery, JWKS,
//! the token endpoint (password and refresh-token grants) and revocation. The tenant in the
//! path must exist; unknown and suspended tenants get the same 404 as everywhere else.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use bulkhead_identity::store::{RealmStore, StoreError};
use bulkhead_model::TenantId;
use serde::Deserialize;
use serde_json::json;

use crate::resolve::{Refusal, TenantDirectory};

/// What the realm endpoints share.
pub struct Realms {
    pub store: RealmStore,
    pub directory: Arc<dyn TenantDirectory>,
    /// The app ids tokens may be issued for (the `client_id`, which becomes the audience).
    pub clients: Vec<String>,
}

impl std::fmt::Debug for Realms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Realms")
            .field("clients", &self.clients)
            .finish_non_exhaustive()
    }
}

pub fn router(realms: Arc<Realms>) -> Router {
    Router::new()
        .route(
            "/realms/{tenant}/.well-known/openid-configuration",
            get(discovery),
        )
        .route("/realms/{tenant}/protocol/openid-connect/certs", get(jwks))
        .route(
            "/realms/{tenant}/protocol/openid-connect/token",
            post(token),
        )
        .route(
            "/realms/{tenant}/protocol/openid-connect/revoke",
            post(revoke),
        )
        .with_state(realms)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn tenant(realms: &Realms, raw: &str) -> Result<TenantId, Refusal> {
    TenantId::parse(raw)
        .ok()
        .filter(|t| realms.directory.is_active(t))
        .ok_or(Refusal::NotFound)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({ "error": error, "error_description": description })),
    )
        .into_response()
}

fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::Unauthorized => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "invalid credentials or refresh token",
        ),
        StoreError::RealmNotFound => Refusal::NotFound.into_response(),
        other => {
            tracing::error!(error = %other, "realm request failed");
            oauth_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal error",
            )
        }
    }
}

async fn discovery(State(realms): State<Arc<Realms>>, Path(raw): Path<String>) -> Response {
    match tenant(&realms, &raw) {
        Ok(t) => Json(realms.store.discovery(&t)).into_response(),
        Err(r) => r.into_response(),
    }
}

async fn jwks(State(realms): State<Arc<Realms>>, Path(raw): Path<String>) -> Response {
    let t = match tenant(&realms, &raw) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    match realms.store.keyset(&t, now()).await {
        Ok(keys) => Json(keys.to_jwks()).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenRequest {
    grant_type: String,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    refresh_token: Option<String>,
}

async fn token(
    State(realms): State<Arc<Realms>>,
    Path(raw): Path<String>,
    Form(req): Form<TokenRequest>,
) -> Response {
    let t = match tenant(&realms, &raw) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    let tokens = match req.grant_type.as_str() {
        "password" => {
            let Some(client) = req.client_id.filter(|c| realms.clients.contains(c)) else {
                return oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "unknown client_id",
                );
            };
            let (Some(user), Some(pw)) = (req.username, req.password) else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "username and password are required",
                );
            };
            realms.store.login(&t, &user, &pw, &client, now()).await
        }
        "refresh_token" => {
            let Some(rt) = req.refresh_token else {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "refresh_token is required",
                );
            };
            realms.store.refresh(&t, &rt, now()).await
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "supported: password, refresh_token",
            );
        }
    };
    match tokens {
        Ok(tokens) => (
            [(axum::http::header::CACHE_CONTROL, "no-store")],
            Json(json!({
                "access_token": tokens.access_token,
                "token_type": "Bearer",
                "expires_in": tokens.expires_in,
                "refresh_token": tokens.refresh_token,
            })),
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct RevokeRequest {
    token: String,
}

async fn revoke(
    State(realms): State<Arc<Realms>>,
    Path(raw): Path<String>,
    Form(req): Form<RevokeRequest>,
) -> Response {
    let t = match tenant(&realms, &raw) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    // RFC 7009: answer 200 whether or not the token was known.
    match realms.store.logout(&t, &req.token).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => store_error(e),
    }
}
