//! Worker supervision and routing: `bulkhead up` runs each app in its own `bulkhead worker`
//! process (booted with the app's boot credential file only), restarts it with backoff when it
//! exits, and forwards the app's requests to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// Where the app's worker currently listens.
#[derive(Clone, Debug)]
pub struct WorkerHandle {
    addr: Arc<RwLock<Option<SocketAddr>>>,
    http: reqwest::Client,
}

impl WorkerHandle {
    fn current(&self) -> Option<SocketAddr> {
        self.addr.read().ok().and_then(|a| *a)
    }

    /// Waits until the worker listens (or `timeout` passes).
    pub async fn ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.current().is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// Starts and supervises the worker of `app` until `shutdown` turns true.
pub fn spawn(
    app: String,
    data_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<WorkerHandle> {
    let exe = std::env::current_exe()?;
    let handle = WorkerHandle {
        addr: Arc::new(RwLock::new(None)),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()?,
    };
    let addr = handle.addr.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut cmd = tokio::process::Command::new(&exe);
            cmd.args(["worker", "--app", &app, "--vault-dir"])
                .arg(data_dir.join("vault"))
                .args(["--listen", "127.0.0.1:0"])
                // Only the app's own boot credential, by file; nothing of the platform's.
                .env_clear()
                .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                .env(
                    "RUST_LOG",
                    std::env::var_os("RUST_LOG").unwrap_or_else(|| "info".into()),
                )
                .env(
                    "BULKHEAD_BOOT_CREDENTIAL_FILE",
                    data_dir.join("boot").join(&app),
                )
                .env("BULKHEAD_EXIT_WITH_PARENT", "1")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(%app, error = %e, "cannot start the worker");
                    return;
                }
            };
            tracing::info!(%app, pid = child.id(), "worker started");
            // Held, never written: closing it (with this process) ends the worker.
            let _stdin = child.stdin.take();
            if let Some(stderr) = child.stderr.take() {
                let addr = addr.clone();
                let app = app.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Some(rest) = line.split("worker listening on http://").nth(1)
                            && let Some(a) =
                                rest.split_whitespace().next().and_then(|a| a.parse().ok())
                            && let Ok(mut slot) = addr.write()
                        {
                            *slot = Some(a);
                        }
                        tracing::info!(target: "bulkhead::worker", %app, "{line}");
                    }
                });
            }
            let started = tokio::time::Instant::now();
            tokio::select! {
                status = child.wait() => {
                    if let Ok(mut slot) = addr.write() { *slot = None; }
                    if started.elapsed() > Duration::from_secs(60) {
                        backoff = Duration::from_millis(500);
                    }
                    tracing::warn!(%app, ?status, ?backoff, "worker exited; restarting after backoff");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                _ = shutdown.changed() => {
                    let _ = child.kill().await;
                    if let Ok(mut slot) = addr.write() { *slot = None; }
                    tracing::info!(%app, "worker stopped");
                    return;
                }
            }
        }
    });
    Ok(handle)
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

fn skip(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"error": {"code": "unavailable", "message": "the app is starting or restarting"}})),
    )
        .into_response()
}

/// Forwards a request to the app's worker, Host and all, and relays its answer.
pub async fn proxy(State(worker): State<WorkerHandle>, req: Request<Body>) -> Response {
    let Some(addr) = worker.current() else {
        return unavailable();
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, bulkhead_runtime::rest::BODY_LIMIT).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            axum::Json(
                json!({"error": {"code": "bad_query", "message": "request body too large"}}),
            ),
        )
            .into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = worker
        .http
        .request(parts.method, format!("http://{addr}{path}"));
    for (name, value) in &parts.headers {
        if !skip(name) {
            out = out.header(name, value);
        }
    }
    let resp = match out.body(bytes).send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "forwarding to the worker failed");
            return unavailable();
        }
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(_) => return unavailable(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if !skip(name) {
            response.headers_mut().append(name, value.clone());
        }
    }
    response
}
