//! The HTTP face of local realms, one per tenant, at `/realms/{tenant}/…`: discovery, JWKS,
//! the token endpoint (password and refresh-token grants) and revocation. The tenant in the
//! path must exist; unknown and suspended tenants get the same 404 as everywhere else.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use bulkhead_identity::store::{RealmStore, StoreError};
use bulkhead_model::TenantId;
use serde::Deserialize;
use serde_json::json;

use crate::auth::now;
use crate::resolve::{Refusal, TenantDirectory};

/// What the realm endpoints share.
pub struct Realms {
    pub store: RealmStore,
    pub directory: Arc<dyn TenantDirectory>,
    /// The app ids tokens may be issued for (the `client_id`, which becomes the audience).
    pub clients: Vec<String>,
    /// Mark session cookies `Secure` (set when served behind TLS).
    pub secure_cookies: bool,
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
        .route("/realms/{tenant}/session", post(session_login))
        .route("/realms/{tenant}/session/logout", post(session_logout))
        .with_state(realms)
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
        StoreError::Throttled { retry_after } => {
            let mut response = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "temporarily_unavailable",
                "too many login attempts; retry later",
            );
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after.max(1)),
            );
            response
        }
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

/// A form body, or the OAuth `invalid_request` error (RFC 6749 §5.2) that OAuth clients parse,
/// instead of axum's plain-text rejection.
fn oauth_form<T>(form: Result<Form<T>, FormRejection>) -> Result<T, Box<Response>> {
    form.map(|Form(v)| v).map_err(|e| {
        Box::new(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("expected an application/x-www-form-urlencoded body: {e}"),
        ))
    })
}

/// The client's address as the listener saw it (throttling counts failures per address).
type Peer = Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>;

fn peer_ip(peer: &Peer) -> Option<std::net::IpAddr> {
    peer.as_ref().map(|p| p.0.0.ip())
}

async fn token(
    State(realms): State<Arc<Realms>>,
    Path(raw): Path<String>,
    peer: Peer,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    let req = match oauth_form(form) {
        Ok(r) => r,
        Err(r) => return *r,
    };
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
            realms
                .store
                .login(&t, &user, &pw, &client, now(), peer_ip(&peer))
                .await
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
    form: Result<Form<RevokeRequest>, FormRejection>,
) -> Response {
    let req = match oauth_form(form) {
        Ok(r) => r,
        Err(r) => return *r,
    };
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

const REFRESH_COOKIE: &str = "bulkhead_refresh";

/// `Set-Cookie` values for a browser session: the access token (HttpOnly), the refresh token
/// (HttpOnly, only sent to this realm's paths) and the CSRF token derived from this access
/// token (readable by the page, to echo in `X-CSRF-Token`; a new one at every login and
/// refresh). No `Domain`: host-only cookies, scoped to the tenant's host.
fn session_cookies(
    tenant: &TenantId,
    access: &str,
    refresh: &str,
    max_age: u64,
    secure: bool,
) -> Vec<String> {
    let secure = if secure { "; Secure" } else { "" };
    let csrf = crate::auth::csrf_token(access);
    vec![
        format!(
            "{}={access}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age}{secure}",
            crate::auth::SESSION_COOKIE
        ),
        format!(
            "{REFRESH_COOKIE}={refresh}; HttpOnly; SameSite=Strict; Path=/realms/{tenant}/; Max-Age=2592000{secure}"
        ),
        format!(
            "{}={csrf}; SameSite=Lax; Path=/; Max-Age={max_age}{secure}",
            crate::auth::CSRF_COOKIE
        ),
    ]
}

fn with_cookies(status: StatusCode, cookies: Vec<String>) -> Response {
    let mut resp = status.into_response();
    for c in cookies {
        if let Ok(v) = axum::http::HeaderValue::from_str(&c) {
            resp.headers_mut().append(axum::http::header::SET_COOKIE, v);
        }
    }
    resp
}

#[derive(Debug, Deserialize)]
pub struct SessionRequest {
    client_id: String,
    username: String,
    password: String,
}

/// Password login for browsers: the tokens go into cookies, never into the page.
async fn session_login(
    State(realms): State<Arc<Realms>>,
    Path(raw): Path<String>,
    peer: Peer,
    Form(req): Form<SessionRequest>,
) -> Response {
    let t = match tenant(&realms, &raw) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if !realms.clients.contains(&req.client_id) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client_id",
        );
    }
    match realms
        .store
        .login(
            &t,
            &req.username,
            &req.password,
            &req.client_id,
            now(),
            peer_ip(&peer),
        )
        .await
    {
        Ok(tokens) => with_cookies(
            StatusCode::NO_CONTENT,
            session_cookies(
                &t,
                &tokens.access_token,
                &tokens.refresh_token,
                tokens.expires_in,
                realms.secure_cookies,
            ),
        ),
        Err(e) => store_error(e),
    }
}

/// Ends the browser session: revokes its refresh-token family and expires the cookies.
async fn session_logout(
    State(realms): State<Arc<Realms>>,
    Path(raw): Path<String>,
    headers: axum::http::HeaderMap,
) -> Response {
    let t = match tenant(&realms, &raw) {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if let Some(refresh) = crate::auth::cookie(&headers, REFRESH_COOKIE)
        && let Err(e) = realms.store.logout(&t, &refresh).await
    {
        return store_error(e);
    }
    let expired = [
        format!("{}=; Path=/; Max-Age=0", crate::auth::SESSION_COOKIE),
        format!("{REFRESH_COOKIE}=; Path=/realms/{t}/; Max-Age=0"),
        format!("{}=; Path=/; Max-Age=0", crate::auth::CSRF_COOKIE),
    ];
    with_cookies(StatusCode::NO_CONTENT, expired.to_vec())
}
