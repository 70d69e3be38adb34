//! The outermost layer of every HTTP service Bulkhead runs (worker and gateway): one request
//! id, no panic escapes, and one JSON error shape for every refusal.
//!
//! - Each request gets an `x-request-id` (the client's when it is short and printable, else a
//!   fresh one), set on the request for the handlers, on the response for the client, and on
//!   the tracing span every log line of the request carries.
//! - A panic in a handler is caught, logged with the request id, and answered with the opaque
//!   JSON 500; the connection and the process live on.
//! - A refusal produced below the handlers — an extractor's rejection (body too large, bad
//!   query string or path), a routing 404 or 405 — arrives as plain text from axum; it is
//!   rewritten here to `{"error": {"code", "message"}}` with the code for its status, so a
//!   client parses every error the same way. 5xx bodies carry the request id.
//!
//! This layer never decides what a request may do; it only shapes what a refusal looks like.

use std::any::Any;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bulkhead_model::ErrorCode;
use tracing::Instrument;

use crate::error::ApiError;
use crate::request_id;

/// The request-id header, read and written.
pub const REQUEST_ID: &str = "x-request-id";
/// Longest client-chosen request id kept.
const MAX_REQUEST_ID: usize = 128;
/// Largest plain-text refusal body read to keep its message.
const MAX_REFUSAL_TEXT: usize = 4096;

/// Wraps a router in the edge layer: request id, caught panics, JSON refusals.
pub fn harden<S: Clone + Send + Sync + 'static>(router: axum::Router<S>) -> axum::Router<S> {
    router
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(axum::middleware::from_fn(edge))
}

fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.chars().all(|c| c.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| {
            // 128 random bits in hex, written from a table (a `format!` per byte was 16
            // allocations on every request without an id).
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let bytes: [u8; 16] = rand::random();
            bytes
                .iter()
                .flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0x0f)]])
                .map(char::from)
                .collect()
        })
}

async fn edge(mut req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let value = HeaderValue::from_str(&id).unwrap_or(HeaderValue::from_static("invalid"));
    req.headers_mut().insert(REQUEST_ID, value.clone());
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let response = request_id::scope(id.clone(), next.run(req).instrument(span.clone())).await;
    let mut response = request_id::scope(id, json_refusal(response).instrument(span)).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("application/json") || v.ends_with("+json")
        })
}

/// The stable code for a refusal that carries only a status.
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        413 => ErrorCode::PayloadTooLarge,
        415 => ErrorCode::UnsupportedMediaType,
        429 => ErrorCode::TooManyRequests,
        503 => ErrorCode::Unavailable,
        s if s < 500 => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    }
}

/// Rewrites a plain-text refusal into the JSON error shape; everything else passes. A client
/// error without a code of its own (e.g. axum's 422 for a body that does not deserialize)
/// becomes 400 `bad_request`.
async fn json_refusal(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let code = code_for_status(status);
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REFUSAL_TEXT)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let message = match (code, text) {
        (c, _) if c.http_status() >= 500 => "internal error".to_owned(),
        (_, Some(t)) => t,
        (c, None) => default_message(c).to_owned(),
    };
    let mut out = ApiError::new(code, message).into_response();
    // A 405 keeps its `Allow`, a 401 its challenge.
    for name in [header::ALLOW, header::WWW_AUTHENTICATE, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

fn default_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotFound => "no such route",
        ErrorCode::MethodNotAllowed => "this route does not take this method",
        ErrorCode::PayloadTooLarge => "request body too large",
        ErrorCode::UnsupportedMediaType => "unsupported content type",
        _ => "the request was refused",
    }
}

fn on_panic(payload: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(
        request_id = request_id::current().unwrap_or_default(),
        panic = detail,
        "a request handler panicked"
    );
    ApiError::new(ErrorCode::Internal, "internal error").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn call(
        app: axum::Router,
        req: Request,
    ) -> (StatusCode, serde_json::Value, Option<String>) {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let id = resp
            .headers()
            .get(REQUEST_ID)
            .map(|v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or_default(),
            id,
        )
    }

    #[allow(clippy::panic)]
    async fn boom() -> &'static str {
        panic!("secret detail")
    }

    fn app() -> axum::Router {
        harden(
            axum::Router::new().route("/boom", get(boom)).route(
                "/echo",
                axum::routing::post(|b: axum::body::Bytes| async move { b.len().to_string() })
                    .layer(axum::extract::DefaultBodyLimit::max(8)),
            ),
        )
    }

    #[tokio::test]
    async fn a_panic_is_an_opaque_json_500_with_the_request_id() {
        let req = Request::get("/boom")
            .header(REQUEST_ID, "req-42")
            .body(Body::empty())
            .unwrap();
        let (status, body, id) = call(app(), req).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"]["code"], "internal");
        assert_eq!(body["error"]["request_id"], "req-42");
        assert!(!body.to_string().contains("secret"));
        assert_eq!(id.as_deref(), Some("req-42"));
    }

    #[tokio::test]
    async fn routing_and_extractor_refusals_use_the_json_shape() {
        let cases = [
            (
                Request::get("/nowhere").body(Body::empty()),
                404,
                "not_found",
            ),
            (
                Request::delete("/boom").body(Body::empty()),
                405,
                "method_not_allowed",
            ),
            (
                Request::post("/echo").body(Body::from("0123456789abcdef")),
                413,
                "payload_too_large",
            ),
        ];
        for (req, status, code) in cases {
            let (st, body, id) = call(app(), req.unwrap()).await;
            assert_eq!(st.as_u16(), status, "{body}");
            assert_eq!(body["error"]["code"], code, "{body}");
            assert!(id.is_some_and(|i| i.len() == 32), "a fresh request id");
        }
    }

    #[tokio::test]
    async fn fresh_request_ids_are_128_random_bits_in_lowercase_hex() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let req = Request::get("/nowhere").body(Body::empty()).unwrap();
            let (_, _, id) = call(app(), req).await;
            let id = id.unwrap();
            assert!(
                id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{id}"
            );
            assert!(seen.insert(id), "request ids repeat");
        }
    }

    #[tokio::test]
    async fn an_unprintable_or_long_request_id_is_replaced() {
        for bad in ["a b", &"x".repeat(200)] {
            let req = Request::get("/nowhere")
                .header(REQUEST_ID, bad)
                .body(Body::empty())
                .unwrap();
            let (_, _, id) = call(app(), req).await;
            assert_ne!(id.as_deref(), Some(bad));
        }
    }
}
