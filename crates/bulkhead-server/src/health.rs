//! Bulkhead's HTTP front door.
//!
//! Serves `GET /healthz` (the process is up) and `GET /readyz` (the platform database answers a
//! query right now). Later issues mount tenant resolution and app routes here. The gateway holds
//! a pool to the platform database only; it must never hold an app's or a tenant's credentials.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use deadpool_postgres::Pool;
use serde_json::json;
use tokio::net::TcpListener;

/// How long a readiness probe may take before it counts as "not ready".
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    platform_db: Pool,
    /// The walls around the workers, and any missing, reported by `/readyz`.
    compartments: Option<crate::compartment::Report>,
}

impl AppState {
    pub fn new(platform_db: Pool) -> Self {
        Self {
            platform_db,
            compartments: None,
        }
    }

    pub fn with_compartments(mut self, report: crate::compartment::Report) -> Self {
        self.compartments = Some(report);
        self
    }
}

pub use bulkhead_control::platform_pool;

/// The gateway's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves `app` beside the health routes until `shutdown` completes, then finishes in-flight
/// requests, over TLS when `certs` is given (`[serve] tls_cert_file`). The peer address is
/// recorded for trusted-proxy checks.
pub(crate) async fn launch(
    listener: TcpListener,
    certs: Option<std::sync::Arc<crate::https::Certs>>,
    state: AppState,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = router(state)
        .merge(app)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    if let Some(certs) = certs {
        let listener = crate::https::TlsListener::new(listener, certs)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        // Wrapped as axum's `TapIo` (doing nothing): axum gives the peer's address to a tapped
        // listener of any kind.
        let listener = axum::serve::ListenerExt::tap_io(listener, |_| {});
        return axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await;
    }
    // Responses go out as hyper writes them (head and a streamed body may be separate
    // writes), not held back by Nagle's algorithm waiting for the client's ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(PROBE_TIMEOUT, probe(&state.platform_db)).await {
        Ok(Ok(())) => {
            Json(json!({ "status": "ready", "compartments": state.compartments })).into_response()
        }
        Ok(Err(cause)) => unready(&cause),
        Err(_) => unready("timed out"),
    }
}

async fn probe(pool: &Pool) -> Result<(), String> {
    let client = pool.get().await.map_err(|e| e.to_string())?;
    client
        .simple_query("SELECT 1")
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

fn unready(cause: &str) -> Response {
    tracing::warn!(%cause, "readiness probe failed: platform database unavailable");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "status": "unready", "error": { "code": "database_unavailable" } })),
    )
        .into_response()
}
