//! Tenant resolution: a tower layer that turns a request into a [`ResolvedTenant`] — or a 404
//! that says nothing about whether the tenant exists.
//!
//! Strategies run in the configured order; the first that names a tenant wins. Every other
//! source the request carries (header, cookie, path prefix, host, custom resolver) is also
//! checked, and one that disagrees with the winner makes the request 403 (`tenant_mismatch`):
//! a request never gets to choose between two tenants. Wrap the whole router with the layer
//! (`TenantLayer::layer(router)`), not `Router::layer`, so the `/t/{tenant}` prefix is stripped
//! before routing. The Host header must be one of the configured domains, a tenant
//! subdomain of a base domain, or a mapped custom domain; `X-Forwarded-Host` counts only from a
//! configured proxy address. Public (anonymous) routes resolve from the host only.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, Uri, request::Parts};
use axum::response::{IntoResponse, Response};
use bulkhead_model::{ErrorCode, TenantId};
use tower::{Layer, Service};

/// Where a tenant came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Header,
    Cookie,
    Subdomain,
    Path,
    CustomDomain,
    Custom,
    Default,
}

impl Source {
    /// Sources that come from the host the request was addressed to, not from the client's
    /// choice of header, cookie or path.
    pub fn is_host(self) -> bool {
        matches!(self, Source::Subdomain | Source::CustomDomain)
    }
}

/// A resolver written by a library user: given the request head and the checked host, name a
/// tenant (or not). The name still goes through id validation and the tenant directory.
pub trait CustomResolver: Send + Sync + 'static {
    fn resolve(&self, parts: &Parts, host: &str) -> Option<String>;
}

/// Which tenants exist and are active. Unknown and suspended look the same to clients.
pub trait TenantDirectory: Send + Sync + 'static {
    fn is_active(&self, tenant: &TenantId) -> bool;
}

/// A fixed set of active tenants (e.g. read from the registry at start).
#[derive(Debug, Clone, Default)]
pub struct TenantSet(pub std::collections::HashSet<TenantId>);

impl TenantDirectory for TenantSet {
    fn is_active(&self, tenant: &TenantId) -> bool {
        self.0.contains(tenant)
    }
}

/// One step of the resolution chain.
#[derive(Clone)]
pub enum Strategy {
    /// A request header, `X-Tenant` by default.
    Header(String),
    /// A cookie.
    Cookie(String),
    /// `{tenant}.{base domain}`.
    Subdomain,
    /// `/t/{tenant}/…`; the prefix is stripped before routing.
    PathPrefix,
    /// A custom domain mapped to its tenant.
    CustomDomain,
    Custom(Arc<dyn CustomResolver>),
    Default(TenantId),
}

impl std::fmt::Debug for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::Header(h) => write!(f, "Header({h})"),
            Strategy::Cookie(c) => write!(f, "Cookie({c})"),
            Strategy::Subdomain => f.write_str("Subdomain"),
            Strategy::PathPrefix => f.write_str("PathPrefix"),
            Strategy::CustomDomain => f.write_str("CustomDomain"),
            Strategy::Custom(_) => f.write_str("Custom"),
            Strategy::Default(t) => write!(f, "Default({t})"),
        }
    }
}

/// The resolution configuration.
#[derive(Debug, Clone, Default)]
pub struct ResolverConfig {
    pub strategies: Vec<Strategy>,
    /// Hosts served as they are (e.g. `api.example.com`, `localhost`).
    pub domains: Vec<String>,
    /// Domains whose single-label subdomains are tenants (`apps.example.com`).
    pub base_domains: Vec<String>,
    /// Custom domains and their tenants.
    pub custom_domains: HashMap<String, TenantId>,
    /// Peers whose `X-Forwarded-Host` is believed.
    pub trusted_proxies: Vec<IpAddr>,
}

/// How a route resolves: the full chain, or (for anonymous public endpoints) the host only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Chain,
    HostOnly,
}

/// The request's tenant, inserted into the request extensions by [`TenantLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTenant {
    pub tenant: TenantId,
    pub via: Source,
    /// The checked host the request was addressed to.
    pub host: String,
}

struct Resolver {
    config: ResolverConfig,
    directory: Arc<dyn TenantDirectory>,
    mode: Mode,
}

/// Why a request got no tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown host, unknown, suspended or malformed tenant: one answer for all.
    NotFound,
    /// Two selectors named different tenants.
    Mismatch,
}

impl IntoResponse for Refusal {
    /// The one error shape, status from the code table.
    fn into_response(self) -> Response {
        let (code, message) = match self {
            Refusal::NotFound => (ErrorCode::TenantNotFound, "not found"),
            Refusal::Mismatch => (
                ErrorCode::TenantMismatch,
                "the request names more than one tenant",
            ),
        };
        crate::error::ApiError::new(code, message).into_response()
    }
}

fn normalize_host(raw: &str) -> Option<String> {
    let raw = raw.trim();
    // Strip a port; refuse bracketed IPv6 literals and anything but hostname characters.
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    ok.then_some(host)
}

/// A cookie's value from the request headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
}

fn path_tenant(uri: &Uri) -> Option<(String, String)> {
    let rest = uri.path().strip_prefix("/t/")?;
    let (tenant, tail) = match rest.split_once('/') {
        Some((t, tail)) => (t, format!("/{tail}")),
        None => (rest, "/".to_owned()),
    };
    Some((tenant.to_owned(), tail))
}

impl Resolver {
    fn host(&self, parts: &Parts) -> Option<String> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = peer
            .filter(|ip| self.config.trusted_proxies.contains(ip))
            .and_then(|_| parts.headers.get("x-forwarded-host"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next());
        let raw = forwarded
            .or_else(|| {
                parts
                    .headers
                    .get(axum::http::header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))?;
        normalize_host(raw)
    }

    fn subdomain_tenant(&self, host: &str) -> Option<String> {
        self.config.base_domains.iter().find_map(|base| {
            let label = host.strip_suffix(base.as_str())?.strip_suffix('.')?;
            (!label.is_empty() && !label.contains('.')).then(|| label.to_owned())
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.config.domains.iter().any(|d| d == host)
            || self.config.custom_domains.contains_key(host)
            || self.subdomain_tenant(host).is_some()
    }

    /// Resolves the tenant; on success returns it and the path to route (prefix stripped).
    fn resolve(&self, parts: &Parts) -> Result<(ResolvedTenant, Option<String>), Refusal> {
        let host = self.host(parts).ok_or(Refusal::NotFound)?;
        if !self.host_allowed(&host) {
            return Err(Refusal::NotFound);
        }
        let path = path_tenant(&parts.uri);
        let mut chosen: Option<(String, Source)> = None;
        let mut selectors: Vec<String> = Vec::new();
        for strategy in &self.config.strategies {
            let host_based = matches!(strategy, Strategy::Subdomain | Strategy::CustomDomain);
            if self.mode == Mode::HostOnly && !host_based {
                continue;
            }
            let (candidate, source) = match strategy {
                Strategy::Header(name) => (
                    parts
                        .headers
                        .get(name.as_str())
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.trim().to_owned()),
                    Source::Header,
                ),
                Strategy::Cookie(name) => (cookie(&parts.headers, name), Source::Cookie),
                Strategy::Subdomain => (self.subdomain_tenant(&host), Source::Subdomain),
                Strategy::PathPrefix => (path.as_ref().map(|p| p.0.clone()), Source::Path),
                Strategy::CustomDomain => (
                    self.config
                        .custom_domains
                        .get(&host)
                        .map(|t| t.as_str().to_owned()),
                    Source::CustomDomain,
                ),
                Strategy::Custom(r) => (r.resolve(parts, &host), Source::Custom),
                Strategy::Default(t) => (Some(t.as_str().to_owned()), Source::Default),
            };
            let Some(candidate) = candidate else { continue };
            // Every source that names a tenant (all but the default) must agree.
            if source != Source::Default {
                selectors.push(candidate.clone());
            }
            if chosen.is_none() {
                chosen = Some((candidate, source));
            }
        }
        let (name, via) = chosen.ok_or(Refusal::NotFound)?;
        if selectors.iter().any(|s| *s != name) {
            return Err(Refusal::Mismatch);
        }
        let tenant = TenantId::parse(&name).map_err(|_| Refusal::NotFound)?;
        if !self.directory.is_active(&tenant) {
            return Err(Refusal::NotFound);
        }
        let rewritten = match (&path, self.mode) {
            (Some((_, tail)), Mode::Chain)
                if self
                    .config
                    .strategies
                    .iter()
                    .any(|s| matches!(s, Strategy::PathPrefix)) =>
            {
                Some(tail.clone())
            }
            _ => None,
        };
        Ok((ResolvedTenant { tenant, via, host }, rewritten))
    }
}

impl ResolverConfig {
    /// How a worker resolves tenants — `/t/<tenant>/`, the `x-tenant` header, a subdomain of
    /// one of `base_domains` — on `domains` (default `127.0.0.1`, `localhost`). The gateway
    /// uses the same to find a tenant's own worker ([`TenantSelector`]).
    pub fn for_workers(domains: &[String], base_domains: &[String]) -> Self {
        Self {
            strategies: vec![
                Strategy::PathPrefix,
                Strategy::Header("x-tenant".into()),
                Strategy::Subdomain,
            ],
            domains: if domains.is_empty() {
                vec!["127.0.0.1".into(), "localhost".into()]
            } else {
                domains.to_vec()
            },
            base_domains: base_domains.to_vec(),
            ..Self::default()
        }
    }
}

/// Every tenant id counts as known (a selector only reads what a request names).
struct AnyTenant;

impl TenantDirectory for AnyTenant {
    fn is_active(&self, _: &TenantId) -> bool {
        true
    }
}

/// Which tenant a request names, by the same rules as [`TenantLayer`] (host allowed, every
/// selector agreeing), without asking whether the tenant exists: for routing a request to the
/// process that serves the tenant, which resolves it again.
pub struct TenantSelector(Resolver);

impl std::fmt::Debug for TenantSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TenantSelector")
            .field(&self.0.config)
            .finish()
    }
}

impl TenantSelector {
    pub fn new(config: ResolverConfig) -> Self {
        Self(Resolver {
            config,
            directory: Arc::new(AnyTenant),
            mode: Mode::Chain,
        })
    }

    /// The tenant the request names, if it names one consistently on an allowed host.
    pub fn tenant(&self, parts: &Parts) -> Option<TenantId> {
        self.0.resolve(parts).ok().map(|(t, _)| t.tenant)
    }
}

/// The tenant-resolution layer.
#[derive(Clone)]
pub struct TenantLayer {
    resolver: Arc<Resolver>,
}

impl std::fmt::Debug for TenantLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantLayer")
            .field("config", &self.resolver.config)
            .field("mode", &self.resolver.mode)
            .finish_non_exhaustive()
    }
}

impl TenantLayer {
    pub fn new(config: ResolverConfig, directory: Arc<dyn TenantDirectory>, mode: Mode) -> Self {
        Self {
            resolver: Arc::new(Resolver {
                config,
                directory,
                mode,
            }),
        }
    }
}

impl<S> Layer<S> for TenantLayer {
    type Service = TenantService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenantService {
            resolver: self.resolver.clone(),
            inner,
        }
    }
}

/// The service [`TenantLayer`] wraps around a router.
#[derive(Clone)]
pub struct TenantService<S> {
    resolver: Arc<Resolver>,
    inner: S,
}

impl<S> std::fmt::Debug for TenantService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantService").finish_non_exhaustive()
    }
}

impl<S> Service<Request<Body>> for TenantService<S>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        match self.resolver.resolve(&parts) {
            Err(refusal) => Box::pin(std::future::ready(Ok(refusal.into_response()))),
            Ok((resolved, rewritten)) => {
                if let Some(path) = rewritten {
                    let pq = match parts.uri.query() {
                        Some(q) => format!("{path}?{q}"),
                        None => path,
                    };
                    match pq.parse::<Uri>() {
                        Ok(uri) => parts.uri = uri,
                        Err(_) => {
                            return Box::pin(std::future::ready(Ok(
                                Refusal::NotFound.into_response()
                            )));
                        }
                    }
                }
                parts.extensions.insert(resolved);
                // Take the service that was driven to readiness; leave a fresh clone behind.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(Request::from_parts(parts, body)))
            }
        }
    }
}
