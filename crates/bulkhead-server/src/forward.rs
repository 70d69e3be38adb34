//! The gateway's hop to a worker: the request's head passed on without hop-by-hop headers,
//! bodies streamed both ways on hyper's pooled keep-alive client, a deadline on the response
//! head only.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};

use crate::supervise::WorkerHandle;

/// Headers that belong to one connection, or that only the gateway may set; neither passed
/// to the worker nor back. `content-length` passes: a body is relayed as it is.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Removes [`HOP_BY_HOP`] and every header the `Connection` header names (RFC 9110 §7.6.1).
fn strip_hop_by_hop(headers: &mut axum::http::HeaderMap) {
    let nominated: Vec<axum::http::HeaderName> = headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| axum::http::HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in nominated {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn unavailable() -> Response {
    bulkhead_runtime::error::ApiError::new(
        bulkhead_model::ErrorCode::Unavailable,
        "the app is starting or restarting",
    )
    .into_response()
}

/// How long the worker has to answer with a response head; its body may take as long as it
/// streams.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Request bodies up to this size are read whole before forwarding, so that an idempotent
/// request can be sent again when a pooled connection turns out closed; larger ones, and those
/// of unknown length, stream through.
const BUFFERED_BODY: usize = 64 * 1024;

/// A request body on its way to the worker.
enum Outgoing {
    /// Small and read whole: can be sent twice.
    Whole(axum::body::Bytes),
    /// Streamed, at most `limit` bytes; `exceeded` is set when the client sent more.
    Streamed {
        body: Body,
        exceeded: Arc<std::sync::atomic::AtomicBool>,
    },
}

impl Outgoing {
    /// The body to send: the bytes, or the client's stream cut off past `limit`.
    fn take(&mut self, limit: usize) -> Body {
        use futures_util::StreamExt;
        match self {
            Outgoing::Whole(bytes) => Body::from(bytes.clone()),
            Outgoing::Streamed { body, exceeded } => {
                let exceeded = exceeded.clone();
                let mut seen = 0usize;
                let stream = std::mem::take(body).into_data_stream().map(move |chunk| {
                    let chunk = chunk.map_err(std::io::Error::other)?;
                    seen = seen.saturating_add(chunk.len());
                    if seen > limit {
                        exceeded.store(true, Ordering::SeqCst);
                        return Err(std::io::Error::other("request body too large"));
                    }
                    Ok(chunk)
                });
                Body::from_stream(stream)
            }
        }
    }
}

fn too_large() -> Response {
    bulkhead_runtime::error::ApiError::new(
        bulkhead_model::ErrorCode::PayloadTooLarge,
        "request body too large",
    )
    .into_response()
}

/// Forwards a request to the app's worker, Host and all, over a pooled keep-alive connection,
/// and relays its answer. Neither body is held whole: a large upload streams to the worker as
/// it arrives and a download streams back (small request bodies excepted, see
/// [`BUFFERED_BODY`]).
pub async fn forward(worker: &WorkerHandle, req: Request<Body>) -> Response {
    use axum::body::HttpBody;
    let Some(authority) = worker.authority() else {
        return unavailable();
    };
    let (mut parts, body) = req.into_parts();
    // The worker applies each route's own limit; this bounds what passes the gateway. Every
    // POST and PATCH route of a worker takes at most the REST body limit (uploads are PUT), so
    // a larger one is refused here, before the worker would have to cut the connection short.
    let limit = if matches!(parts.method, Method::POST | Method::PATCH) {
        bulkhead_runtime::rest::BODY_LIMIT
    } else {
        bulkhead_runtime::files::DEFAULT_MAX_BYTES.max(bulkhead_runtime::rest::BODY_LIMIT)
    };
    let length = body.size_hint().exact();
    if length.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let mut outgoing = match length {
        Some(n) if n <= BUFFERED_BODY as u64 => match axum::body::to_bytes(body, limit).await {
            Ok(bytes) => Outgoing::Whole(bytes),
            Err(_) => return too_large(),
        },
        _ => Outgoing::Streamed {
            body,
            exceeded: Arc::default(),
        },
    };
    strip_hop_by_hop(&mut parts.headers);
    let mut uri = axum::http::uri::Parts::default();
    uri.scheme = Some(axum::http::uri::Scheme::HTTP);
    uri.authority = Some(authority);
    uri.path_and_query = parts.uri.path_and_query().cloned();
    let Ok(uri) = axum::http::Uri::from_parts(uri) else {
        return unavailable();
    };
    // A second attempt needs the head again; only a request that may have one keeps a copy.
    let retry = (parts.method.is_idempotent() && matches!(outgoing, Outgoing::Whole(_)))
        .then(|| (parts.method.clone(), parts.headers.clone()));
    let request = |method, headers, outgoing: &mut Outgoing| {
        let mut out = Request::new(outgoing.take(limit));
        *out.method_mut() = method;
        *out.uri_mut() = uri.clone();
        *out.headers_mut() = headers;
        tokio::time::timeout(ANSWER_TIMEOUT, worker.upstream.request(out))
    };
    let answer = request(parts.method, parts.headers, &mut outgoing).await;
    // A pooled connection the worker has just closed (e.g. after refusing an oversized body)
    // fails the next request before the worker sees it; an idempotent request whose body was
    // read whole is sent once more on a fresh connection.
    let answer = match (answer, retry) {
        (Ok(Err(e)), Some((method, headers))) => {
            tracing::debug!(error = %e, "forwarding to the worker failed; retrying once");
            request(method, headers, &mut outgoing).await
        }
        (answer, _) => answer,
    };
    let mut response = match answer {
        Ok(Ok(response)) => response.map(Body::new),
        Ok(Err(e)) => {
            if let Outgoing::Streamed { exceeded, .. } = &outgoing
                && exceeded.load(Ordering::SeqCst)
            {
                return too_large();
            }
            tracing::warn!(error = %e, "forwarding to the worker failed");
            return unavailable();
        }
        Err(_) => {
            tracing::warn!(timeout = ?ANSWER_TIMEOUT, "the worker did not answer in time");
            return unavailable();
        }
    };
    strip_hop_by_hop(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    /// A real HTTP server on 127.0.0.1 standing in for the worker: answers with the request
    /// headers it received, and with hop-by-hop headers of its own.
    async fn echo() -> std::net::SocketAddr {
        async fn seen(headers: HeaderMap, body: axum::body::Bytes) -> Response {
            let names: std::collections::BTreeMap<String, String> = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            let mut response = axum::Json(serde_json::json!({
                "headers": names,
                "body": String::from_utf8_lossy(&body),
            }))
            .into_response();
            let h = response.headers_mut();
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
            h.insert("connection", "x-internal".parse().unwrap());
            h.insert("x-internal", "worker only".parse().unwrap());
            h.insert("x-kept", "yes".parse().unwrap());
            response
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, axum::Router::new().fallback(seen))
                .await
                .unwrap();
        });
        addr
    }

    /// What a client says about itself or about the connection stops at the gateway: its
    /// `X-Forwarded-*` (a worker that trusts the gateway as a proxy would take them for the
    /// gateway's word, e.g. the host a tenant is resolved by) and the headers its `Connection`
    /// names; the rest of the request and the body pass, and the worker's own hop-by-hop
    /// headers do not come back. Fails when the stripping is removed from either direction.
    #[tokio::test]
    async fn client_forwarding_and_connection_headers_stop_at_the_gateway() {
        let worker = WorkerHandle::listening_at("echo", echo().await);
        let req = Request::post("/t/acme/api/ticket?x=1")
            .header("host", "acme.example.com")
            .header("authorization", "Bearer t")
            .header("content-type", "application/json")
            .header("x-forwarded-host", "initech.example.com")
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("connection", "keep-alive, x-client-hop")
            .header("x-client-hop", "secret")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("content-length", "11")
            .body(Body::from("{\"a\": true}"))
            .unwrap();
        let response = forward(&worker, req).await;
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        for gone in ["keep-alive", "x-forwarded-for", "connection", "x-internal"] {
            assert!(!headers.contains_key(gone), "{gone} came back: {headers:?}");
        }
        assert_eq!(headers["x-kept"], "yes");
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let got = &seen["headers"];
        for gone in [
            "x-forwarded-host",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-client-hop",
            "proxy-authorization",
        ] {
            assert!(got.get(gone).is_none(), "{gone} reached the worker: {got}");
        }
        assert_eq!(got["host"], "acme.example.com");
        assert_eq!(got["authorization"], "Bearer t");
        assert_eq!(got["content-length"], "11");
        assert_eq!(seen["body"], "{\"a\": true}");
    }
}
