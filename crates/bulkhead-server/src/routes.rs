//! Which worker answers which request (`/apps/<app>/…`, a host routed to an app, or the only
//! app; then, for a tenant with a worker of its own, that worker), and the gateway's
//! `/metrics`.

use crate::egress_proxy::{EgressProxy, ProxyApp};
use crate::supervise::WorkerHandle;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Uri};
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Which worker answers which request.
#[derive(Debug)]
pub(crate) struct Routes {
    pub(crate) workers: Vec<WorkerHandle>,
    /// `database` tenants' own workers.
    pub(crate) tenant_workers: Arc<crate::tenant_workers::TenantWorkers>,
    /// Each app's tenant resolution, as its workers do it (to find a tenant's own worker).
    pub(crate) selectors: BTreeMap<String, bulkhead_runtime::TenantSelector>,
    /// Host name → app.
    pub(crate) hosts: BTreeMap<String, String>,
    /// The egress proxy, for its denial counts.
    pub(crate) proxy: Option<Arc<EgressProxy>>,
    /// The verify canary, for its last results.
    pub(crate) canary: Option<Arc<dyn crate::Canary>>,
    /// What `/metrics` requires as its bearer token (`[serve] metrics_token_file`).
    pub(crate) metrics_token: Option<crate::bearer::BearerToken>,
}

/// A Prometheus label value, escaped as the text format requires (`\`, `"`, newline).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

impl Routes {
    pub(crate) fn worker(&self, app: &str) -> Option<&WorkerHandle> {
        self.workers.iter().find(|w| w.app() == app)
    }

    /// The worker for a request and the path it should see.
    pub(crate) fn pick(&self, req: &Request<Body>) -> Option<(&WorkerHandle, Option<Uri>)> {
        let path = req.uri().path();
        if let Some(rest) = path.strip_prefix("/apps/") {
            let (app, tail) = rest.split_once('/').unwrap_or((rest, ""));
            let worker = self.worker(app)?;
            let query = req
                .uri()
                .query()
                .map(|q| format!("?{q}"))
                .unwrap_or_default();
            let uri = format!("/{tail}{query}").parse().ok()?;
            return Some((worker, Some(uri)));
        }
        let host = req
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
            .unwrap_or_default();
        if let Some(app) = self.hosts.get(host) {
            return Some((self.worker(app)?, None));
        }
        match self.workers.as_slice() {
            [only] => Some((only, None)),
            _ => None,
        }
    }
}

pub(crate) async fn route(State(routes): State<Arc<Routes>>, mut req: Request<Body>) -> Response {
    let Some((worker, uri)) = routes.pick(&req) else {
        return bulkhead_runtime::error::ApiError::new(
            bulkhead_model::ErrorCode::NotFound,
            "no app is routed here: use /apps/<app>/ or a host routed to an app",
        )
        .into_response();
    };
    if let Some(uri) = uri {
        *req.uri_mut() = uri;
    }
    // A tenant with a worker of its own is served there, never by the app's worker.
    if routes.tenant_workers.serves(worker.app()) {
        let (parts, body) = req.into_parts();
        let own = routes
            .selectors
            .get(worker.app())
            .and_then(|s| s.tenant(&parts))
            .and_then(|t| routes.tenant_workers.worker(worker.app(), t.as_str()));
        let req = Request::from_parts(parts, body);
        return crate::forward::forward(own.as_ref().unwrap_or(worker), req).await;
    }
    crate::forward::forward(worker, req).await
}

/// Prometheus text: one family at a time, a sample per app.
pub(crate) async fn metrics(
    State(routes): State<Arc<Routes>>,
    headers: axum::http::HeaderMap,
) -> Response {
    use std::fmt::Write;
    if let Some(Err(refused)) = routes.metrics_token.as_ref().map(|t| t.check(&headers)) {
        return refused.into_response();
    }
    const FAMILIES: [(&str, &str, &str); 4] = [
        (
            "bulkhead_worker_up",
            "gauge",
            "Whether the app's worker is listening.",
        ),
        (
            "bulkhead_worker_starts_total",
            "counter",
            "Worker processes started.",
        ),
        (
            "bulkhead_worker_health_failures_total",
            "counter",
            "Failed worker health checks.",
        ),
        (
            "bulkhead_worker_unhealthy_restarts_total",
            "counter",
            "Workers killed after failing their health checks.",
        ),
    ];
    let samples: Vec<_> = routes
        .workers
        .iter()
        .map(|w| (w.app(), w.samples()))
        .collect();
    let mut out = String::new();
    for (i, (name, kind, help)) in FAMILIES.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (app, values) in &samples {
            let _ = writeln!(out, "{name}{{app=\"{}\"}} {}", label(app), values[i].1);
        }
    }
    let _ = writeln!(
        out,
        "# HELP bulkhead_egress_denials_total Outbound requests refused, by app, where (worker or proxy) and reason.\n# TYPE bulkhead_egress_denials_total counter"
    );
    for w in &routes.workers {
        for (reason, n) in w.egress_denials() {
            let _ = writeln!(
                out,
                "bulkhead_egress_denials_total{{app=\"{}\",source=\"worker\",reason=\"{}\"}} {n}",
                label(w.app()),
                label(&reason.to_string())
            );
        }
    }
    if let Some(canary) = &routes.canary {
        out.push_str(&canary.metrics());
    }
    for ProxyApp { app, egress, .. } in routes.proxy.iter().flat_map(|p| p.apps.iter()) {
        for (reason, n) in egress.denials() {
            let _ = writeln!(
                out,
                "bulkhead_egress_denials_total{{app=\"{}\",source=\"proxy\",reason=\"{}\"}} {n}",
                label(app.as_str()),
                label(&reason.to_string())
            );
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(label("helpdesk"), "helpdesk");
    }
}
