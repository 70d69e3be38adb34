//! What a front-end needs besides the REST API, per tenant:
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | `/sdk/bulkhead.js` | the browser SDK: the `bulkhead` module's surface over the session |
//! | GET | `/sdk/session` | where this tenant's realm signs a browser in and out |
//! | GET | `/me` | the caller: `{id, roles, anonymous}` |
//!
//! The SDK is one static file; it learns the tenant from nothing but where it was served
//! (`/t/{tenant}/…` or the tenant's host), and the realm's endpoints from `/sdk/session`, so
//! no front-end code names a tenant.

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::Api;
use crate::error::ApiError;
use crate::resolve::ResolvedTenant;

/// The SDK's source.
pub const SDK_JS: &str = include_str!("sdk.js");

/// Its ETag: a digest of the source, so a browser revalidates only when the platform changed.
static SDK_ETAG: LazyLock<String> = LazyLock::new(|| {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(SDK_JS.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
});

/// `GET /sdk/bulkhead.js`.
pub(crate) async fn script(headers: HeaderMap) -> Response {
    let etag = SDK_ETAG.as_str();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            )],
            SDK_JS,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(crate::functions::APP_CSP),
    );
    resp
}

/// `GET /sdk/session`: the resolved tenant's realm endpoints for a browser session, and the
/// app's client id. The platform names the realm; the page does not.
pub(crate) async fn session(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
) -> Json<Value> {
    let realm = format!("/realms/{}", resolved.tenant);
    Json(json!({
        "login": format!("{realm}/session"),
        "logout": format!("{realm}/session/logout"),
        "client_id": api.plane().manifest().app.to_string(),
    }))
}

/// `GET /me`: who the session (or token) is, as the tenant's realm verified it.
pub(crate) async fn me(
    State(api): State<Arc<Api>>,
    Extension(resolved): Extension<ResolvedTenant>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let (_, principal) = api.context(&resolved, &headers, false).await?;
    let anonymous = principal.is_anonymous();
    Ok(Json(json!({
        "id": (!anonymous).then_some(principal.subject),
        "roles": if anonymous { Vec::new() } else { principal.roles },
        "anonymous": anonymous,
    })))
}
