//! Outbound HTTP for app code: the only way out it gets (`ctx.http()` in the runtime).
//!
//! Deny by default: a request goes out only if its host (or address) is on the tenant's or
//! the app's allow-list ([`policy::AllowList`]). The platform resolves names itself and checks
//! every address: a name that resolves to loopback, link-local (cloud metadata), private,
//! unique-local, multicast or another special range is refused unless an address entry names
//! it. The connection then goes to exactly the checked addresses (the HTTP client is pinned to
//! them: no second lookup, no DNS rebinding between check and connect). Redirects are followed
//! by hand, each hop checked again (or not followed at all), and responses are bounded in size
//! and time. Every denial is logged as an audit event (target `bulkhead::audit`, with tenant,
//! app, host and reason) and counted.

pub mod dns;
/// The allow-list syntax and address classes (shared with tenants.yaml validation).
pub use bulkhead_model::egress as policy;
pub mod proxy;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_model::{AppId, TenantId};
use bytes::Bytes;
pub use policy::{AllowList, BadEntry};
use reqwest::{Method, StatusCode, Url};

/// How outbound requests behave.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Whole-request time limit (connect, each redirect hop, body).
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: usize,
    /// Redirects followed (each re-checked); 0: none followed, the 3xx is returned.
    pub max_redirects: u8,
    /// The DNS server to ask; `None`: the system resolver.
    pub nameserver: Option<SocketAddr>,
    /// Send everything through the platform's egress proxy (`host:port`, this app's token)
    /// instead of connecting directly: a worker in a network namespace has no other route.
    /// The proxy makes every check; refusals come back as [`Error::Denied`].
    pub via_proxy: Option<(String, bulkhead_model::Secret)>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_response_bytes: 10 * 1024 * 1024,
            max_redirects: 5,
            nameserver: None,
            via_proxy: None,
        }
    }
}

/// `[egress]` in bulkhead.toml: limits, the resolver, and each app's own allow-list.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressSettings {
    /// Whole-request time limit in seconds (each redirect hop included).
    pub timeout_secs: u64,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Redirects followed, each re-checked; 0: the 3xx is returned as it is.
    pub max_redirects: u8,
    /// DNS server to ask (`ip:port`); unset: the system resolver.
    pub nameserver: Option<SocketAddr>,
    /// Hosts every tenant of an app may reach, by app: `{ helpdesk = ["api.mailer.example"] }`.
    pub apps: BTreeMap<String, Vec<String>>,
    /// Where `bulkhead serve` runs the CONNECT proxy for clients that bring their own HTTP
    /// stack (same lists; each worker gets its app's proxy URL and token). Unset: no proxy.
    pub proxy_listen: Option<SocketAddr>,
}

impl Default for EgressSettings {
    fn default() -> Self {
        let c = EgressConfig::default();
        Self {
            timeout_secs: c.timeout.as_secs(),
            max_response_bytes: c.max_response_bytes,
            max_redirects: c.max_redirects,
            nameserver: None,
            apps: BTreeMap::new(),
            proxy_listen: None,
        }
    }
}

impl EgressSettings {
    /// The egress of `app` under these settings.
    pub fn egress_for(&self, app: &AppId) -> Result<Egress, BadEntry> {
        let list = AllowList::parse(self.apps.get(app.as_str()).map_or(&[][..], Vec::as_slice))?;
        Ok(Egress::new(
            app.clone(),
            list,
            EgressConfig {
                timeout: Duration::from_secs(self.timeout_secs.max(1)),
                max_response_bytes: self.max_response_bytes,
                max_redirects: self.max_redirects,
                nameserver: self.nameserver,
                via_proxy: None,
            },
        ))
    }
}

/// Why a request did not go out, or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused by policy; the request never left.
    #[error("egress to {host} denied: {reason}")]
    Denied { host: String, reason: String },
    #[error("invalid URL: {0}")]
    BadUrl(String),
    #[error("more than {0} redirects")]
    TooManyRedirects(u8),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("request failed: {0}")]
    Failed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What app code sees of an outbound request that did not succeed: a denial is the caller's
/// 403 (the message says why), a bad URL a 400, a peer that failed a 503.
impl bulkhead_model::Coded for Error {
    fn code(&self) -> bulkhead_model::ErrorCode {
        use bulkhead_model::ErrorCode as C;
        match self {
            Error::Denied { .. } => C::Forbidden,
            Error::BadUrl(_) => C::BadRequest,
            Error::TooLarge(_) => C::PayloadTooLarge,
            Error::TooManyRedirects(_) | Error::Failed(_) => C::Unavailable,
        }
    }

    fn field(&self) -> Option<&str> {
        matches!(self, Error::BadUrl(_)).then_some("url")
    }
}

use bulkhead_model::error_chain;

/// Headers that carry credentials: never sent past the origin they were given to.
fn is_credential_header(name: &str) -> bool {
    ["authorization", "cookie", "proxy-authorization"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// Headers that describe a body: dropped with the body when a redirect turns it into a GET.
fn is_body_header(name: &str) -> bool {
    ["content-type", "content-length", "content-encoding"]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
}

impl Request {
    pub fn get(url: &str) -> Self {
        Self {
            method: Method::GET,
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }
}

/// A response, read whole (within the size limit).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The URL that answered (after redirects).
    pub url: String,
}

/// The egress of one app in one worker.
#[derive(Debug)]
pub struct Egress {
    app: AppId,
    app_list: AllowList,
    config: EgressConfig,
    denials: Mutex<BTreeMap<String, u64>>,
    resolver: std::result::Result<dns::Resolver, String>,
    /// One pooled client per tenant, connecting only to the addresses its last check of each
    /// host approved (see [`Pinned`]).
    clients: Mutex<std::collections::HashMap<TenantId, (reqwest::Client, Arc<Pinned>)>>,
    /// Through the platform's proxy: one pooled client per tenant (the proxy checks each hop).
    proxied: Mutex<std::collections::HashMap<TenantId, reqwest::Client>>,
}

/// The addresses each host was last checked to for one tenant: the pooled client's only
/// resolver, so it never connects anywhere the policy did not approve for that tenant (a
/// reused connection goes to an address approved when it was opened).
#[derive(Debug, Default)]
struct Pinned(Mutex<std::collections::HashMap<String, Vec<SocketAddr>>>);

impl reqwest::dns::Resolve for Pinned {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let found = self
            .0
            .lock()
            .ok()
            .and_then(|p| p.get(name.as_str()).cloned());
        Box::pin(async move {
            match found {
                Some(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                None => Err("no checked address for this host".into()),
            }
        })
    }
}

impl Egress {
    pub fn new(app: AppId, app_list: AllowList, config: EgressConfig) -> Self {
        let resolver =
            dns::Resolver::new(config.nameserver, config.timeout).map_err(|e| e.to_string());
        Self {
            app,
            app_list,
            config,
            denials: Mutex::new(BTreeMap::new()),
            resolver,
            clients: Mutex::default(),
            proxied: Mutex::default(),
        }
    }

    /// The tenant's pooled client and its pins.
    fn client(&self, tenant: &TenantId) -> Result<(reqwest::Client, Arc<Pinned>)> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| Error::Failed("egress clients poisoned".into()))?;
        if let Some(c) = clients.get(tenant) {
            return Ok(c.clone());
        }
        let pins = Arc::new(Pinned::default());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(pins.clone())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Failed(e.to_string()))?;
        clients.insert(tenant.clone(), (client.clone(), pins.clone()));
        Ok((client, pins))
    }

    /// The same egress, sending everything through the platform's proxy (see
    /// [`EgressConfig::via_proxy`]).
    pub fn through_proxy(mut self, proxy: (String, bulkhead_model::Secret)) -> Self {
        self.config.via_proxy = Some(proxy);
        self
    }

    pub fn app(&self) -> &AppId {
        &self.app
    }

    /// Denials so far, by reason class.
    pub fn denials(&self) -> BTreeMap<String, u64> {
        self.denials.lock().map(|d| d.clone()).unwrap_or_default()
    }

    fn deny(&self, tenant: &TenantId, host: &str, class: &str, reason: String) -> Error {
        tracing::warn!(
            target: "bulkhead::audit",
            event = "egress.denied",
            app = %self.app,
            tenant = %tenant,
            host,
            reason = %reason,
            "egress denied"
        );
        if let Ok(mut d) = self.denials.lock() {
            *d.entry(class.to_owned()).or_default() += 1;
        }
        Error::Denied {
            host: host.to_owned(),
            reason,
        }
    }

    /// Through the platform's proxy, which checks every hop (redirects are new requests).
    async fn send_via_proxy(
        &self,
        tenant: &TenantId,
        proxy: &str,
        token: &bulkhead_model::Secret,
        req: Request,
    ) -> Result<Response> {
        let redirects = self.config.max_redirects;
        let cached = self
            .proxied
            .lock()
            .ok()
            .and_then(|c| c.get(tenant).cloned());
        let client = match cached {
            Some(c) => c,
            None => {
                let via = reqwest::Proxy::all(format!("http://{proxy}"))
                    .map_err(|e| Error::Failed(e.to_string()))?
                    .basic_auth(tenant.as_str(), token.expose());
                let c = reqwest::Client::builder()
                    .proxy(via)
                    .timeout(self.config.timeout)
                    .redirect(if redirects == 0 {
                        reqwest::redirect::Policy::none()
                    } else {
                        reqwest::redirect::Policy::limited(usize::from(redirects))
                    })
                    .build()
                    .map_err(|e| Error::Failed(e.to_string()))?;
                if let Ok(mut all) = self.proxied.lock() {
                    all.insert(tenant.clone(), c.clone());
                }
                c
            }
        };
        let url = Url::parse(&req.url).map_err(|e| Error::BadUrl(e.to_string()))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let mut rb = client.request(req.method.clone(), url);
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        if let Some(b) = &req.body {
            rb = rb.body(b.clone());
        }
        let resp = match rb.send().await {
            Ok(r) => r,
            // A refused CONNECT surfaces as a failed tunnel.
            Err(e) if error_chain(&e).contains("tunnel") => {
                return Err(self.deny(
                    tenant,
                    &host,
                    "proxy",
                    "refused by the egress proxy".into(),
                ));
            }
            Err(e) if e.is_redirect() => return Err(Error::TooManyRedirects(redirects)),
            Err(e) => return Err(Error::Failed(error_chain(&e))),
        };
        if resp.headers().contains_key(proxy::DENIAL_HEADER) {
            let reason = resp.text().await.unwrap_or_default().trim().to_owned();
            return Err(self.deny(tenant, &host, "proxy", reason));
        }
        self.read(resp).await
    }

    /// The response, its body read whole within `max_response_bytes`.
    async fn read(&self, mut resp: reqwest::Response) -> Result<Response> {
        let status = resp.status();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
            .collect();
        let url = resp.url().to_string();
        let limit = self.config.max_response_bytes;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(Error::TooLarge(limit));
        }
        let mut out = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::Failed(e.to_string()))?
        {
            if out.len() + chunk.len() > limit {
                return Err(Error::TooLarge(limit));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body: Bytes::from(out),
            url,
        })
    }

    /// The addresses `url` may be reached at for `tenant`, or why not.
    pub async fn check(
        &self,
        tenant: &TenantId,
        list: &AllowList,
        url: &Url,
    ) -> Result<Vec<SocketAddr>> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::BadUrl(format!(
                "scheme {} is not http or https",
                url.scheme()
            )));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| Error::BadUrl("no port".into()))?;
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(ip)) => {
                return self.check_literal(tenant, list, IpAddr::V4(ip), port);
            }
            Some(url::Host::Ipv6(ip)) => {
                return self.check_literal(tenant, list, IpAddr::V6(ip), port);
            }
            None => return Err(Error::BadUrl("no host".into())),
        };
        if !list.allows_name(&host, port) && !self.app_list.allows_name(&host, port) {
            return Err(self.deny(
                tenant,
                &host,
                "not_allowed",
                format!("{host}:{port} is not on the tenant's or the app's allow-list"),
            ));
        }
        let addrs = self.resolve(&host, port).await.map_err(|e| {
            self.deny(
                tenant,
                &host,
                "unresolved",
                format!("{host} does not resolve: {e}"),
            )
        })?;
        if addrs.is_empty() {
            return Err(self.deny(
                tenant,
                &host,
                "unresolved",
                format!("{host} has no address"),
            ));
        }
        for a in &addrs {
            if let Some(range) = policy::special_range(a.ip())
                && !list.allows_address(a.ip(), port)
                && !self.app_list.allows_address(a.ip(), port)
            {
                return Err(self.deny(
                    tenant,
                    &host,
                    "special_address",
                    format!("{host} resolves to {} ({range})", a.ip()),
                ));
            }
        }
        Ok(addrs)
    }

    fn check_literal(
        &self,
        tenant: &TenantId,
        list: &AllowList,
        ip: IpAddr,
        port: u16,
    ) -> Result<Vec<SocketAddr>> {
        if list.allows_address(ip, port) || self.app_list.allows_address(ip, port) {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let why = policy::special_range(ip)
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        Err(self.deny(
            tenant,
            &ip.to_string(),
            "address_not_allowed",
            format!("address {ip}{why} is not on an allow-list"),
        ))
    }

    async fn resolve(&self, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
        let resolver = self
            .resolver
            .as_ref()
            .map_err(|e| std::io::Error::other(format!("the resolver could not be set up: {e}")))?;
        let ips = resolver.lookup(host).await?;
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// Sends `req` for `tenant` under its allow-list `list` (and the app's).
    pub async fn send(
        &self,
        tenant: &TenantId,
        list: &AllowList,
        req: Request,
    ) -> Result<Response> {
        if let Some((proxy, token)) = &self.config.via_proxy {
            return self.send_via_proxy(tenant, proxy, token, req).await;
        }
        let mut url = Url::parse(&req.url).map_err(|e| Error::BadUrl(e.to_string()))?;
        let origin = url.origin();
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        let mut headers = req.headers.clone();
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let (client, pins) = self.client(tenant)?;
        for hop in 0..=self.config.max_redirects {
            // Every hop is checked again; the client connects to the checked addresses only.
            let addrs = self.check(tenant, list, &url).await?;
            if let (Some(url::Host::Domain(d)), Ok(mut pinned)) = (url.host(), pins.0.lock()) {
                pinned.insert(d.to_owned(), addrs);
            }
            let mut rb = client
                .request(method.clone(), url.clone())
                .timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
            for (k, v) in &headers {
                rb = rb.header(k, v);
            }
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            let resp = rb.send().await.map_err(|e| Error::Failed(e.to_string()))?;
            let status = resp.status();
            if status.is_redirection() && self.config.max_redirects > 0 {
                if hop == self.config.max_redirects {
                    return Err(Error::TooManyRedirects(self.config.max_redirects));
                }
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| Error::Failed("a redirect without Location".into()))?;
                url = url
                    .join(location)
                    .map_err(|e| Error::BadUrl(e.to_string()))?;
                if status == StatusCode::SEE_OTHER
                    || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                        && method == Method::POST)
                {
                    method = Method::GET;
                    body = None;
                    headers.retain(|(k, _)| !is_body_header(k));
                }
                // Credentials are for the origin they were given to: a hop to another scheme,
                // host or port goes without them (and stays without them).
                if url.origin() != origin {
                    headers.retain(|(k, _)| !is_credential_header(k));
                }
                continue;
            }
            return self.read(resp).await;
        }
        Err(Error::TooManyRedirects(self.config.max_redirects))
    }
}
