//! OpenBao / HashiCorp Vault: KV v2 at `secret/`, AppRole auth.
//!
//! Each app's secrets live under `secret/data/bulkhead/apps/<app>/`. Creating an app writes
//! an ACL policy `bulkhead-app-<app>` that allows reading that path and nothing else, and an
//! AppRole of the same name bound to it; the app's boot credential is the role id and a secret
//! id. The platform's own token (admin) never leaves the platform. This crate has the reader
//! and the shared request helpers; the admin side is `bulkhead-vault-admin`.
//!
//! A secret id opens one login within [`SECRET_ID_TTL`]; the token it gives is periodic
//! ([`TOKEN_PERIOD`]) and the reader renews it every [`RENEW_EVERY`], so a boot credential
//! seen later (in a core dump, a log, a stolen pipe) is worth nothing. A new worker's secret id
//! destroys the unused ones, and the supervisor revokes the replaced worker's token by its
//! accessor.

use std::time::Duration;

use bulkhead_model::AppId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{BootCredential, BoxFuture, Error, Result, Secret, VaultReader, check_name};

/// How long an issued secret id stays valid (it must be used once, at the worker's boot).
pub const SECRET_ID_TTL: &str = "10m";
/// The period of a worker's token: it dies this long after its last renewal.
pub const TOKEN_PERIOD: &str = "30m";
/// How often a reader renews its token.
pub const RENEW_EVERY: Duration = Duration::from_secs(10 * 60);

/// The HTTP client for OpenBao. With `ca_pem` (`[vault] ca_file`'s certificates) the server's
/// certificate must lead to one of them, and to nothing else: the system's roots are not
/// trusted then.
pub fn client(ca_pem: Option<&str>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| Error::BadCredential(format!("the vault CA certificates: {e}")))?;
        if certs.is_empty() {
            return Err(Error::BadCredential(
                "the vault CA file holds no certificate".into(),
            ));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| Error::Unavailable(e.to_string()))
}

pub fn role(app: &AppId) -> String {
    format!("bulkhead-app-{app}")
}

/// Where the apps' secrets are on the server: the KV v2 mount (`[vault] mount`, default
/// `secret`) and the namespace (`[vault] namespace`, sent as `X-Vault-Namespace`; none by
/// default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub mount: String,
    pub namespace: Option<String>,
}

impl Default for Location {
    fn default() -> Self {
        Self {
            mount: "secret".into(),
            namespace: None,
        }
    }
}

impl Location {
    /// The KV v2 data path of an app's secret `name`.
    pub fn data_path(&self, app: &AppId, name: &str) -> String {
        format!("{}/data/bulkhead/apps/{app}/{name}", self.mount)
    }

    /// The KV v2 metadata path of an app's space, followed by `rest` (`""` or `/name`).
    pub fn metadata_path(&self, app: &AppId, rest: &str) -> String {
        format!("{}/metadata/bulkhead/apps/{app}{rest}", self.mount)
    }
}

pub async fn call(
    http: &reqwest::Client,
    addr: &str,
    location: &Location,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let url = format!("{}/v1/{path}", addr.trim_end_matches('/'));
    let mut req = http.request(method, &url);
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t);
    }
    if let Some(ns) = &location.namespace {
        req = req.header("X-Vault-Namespace", ns);
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("{url}: {}", bulkhead_model::with_causes(&e))))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

pub fn expect_ok(status: StatusCode, body: &Value, what: &str) -> Result<()> {
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::FORBIDDEN => Err(Error::Denied),
        StatusCode::NOT_FOUND => Err(Error::NotFound(what.to_owned())),
        s => Err(Error::Unavailable(format!(
            "{what}: HTTP {s}: {}",
            body["errors"]
        ))),
    }
}

pub fn value_of(body: &Value, name: &str) -> Result<Secret> {
    body["data"]["data"]["value"]
        .as_str()
        .map(Secret::new)
        .ok_or_else(|| Error::NotFound(name.to_owned()))
}

/// An app worker's handle: logs in with its AppRole and reads its own path.
#[derive(Debug)]
pub struct OpenBaoReader {
    addr: String,
    app: AppId,
    role_id: String,
    secret_id: Secret,
    token: Mutex<Option<Session>>,
    accessor: std::sync::Mutex<Option<String>>,
    location: Location,
    http: reqwest::Client,
}

/// A logged-in token and when it was last renewed.
#[derive(Debug, Clone)]
struct Session {
    token: String,
    renewed: std::time::Instant,
}

impl OpenBaoReader {
    pub fn new(addr: &str, app: AppId, credential: &BootCredential) -> Result<Self> {
        match credential {
            BootCredential::AppRole { role_id, secret_id } => Ok(Self {
                addr: addr.to_owned(),
                app,
                role_id: role_id.clone(),
                secret_id: Secret::new(secret_id.clone()),
                token: Mutex::new(None),
                accessor: std::sync::Mutex::new(None),
                location: Location::default(),
                http: client(None)?,
            }),
            BootCredential::Embedded { .. } => Err(Error::BadCredential(
                "an embedded key cannot log in to OpenBao".into(),
            )),
        }
    }

    /// The same reader for secrets at `location` (mount and namespace).
    pub fn at(mut self, location: Location) -> Self {
        self.location = location;
        self
    }

    /// The same reader, trusting only the CA certificates `ca_pem` (see [`client`]).
    pub fn trusting(mut self, ca_pem: &str) -> Result<Self> {
        self.http = client(Some(ca_pem))?;
        Ok(self)
    }

    async fn login(&self) -> Result<Session> {
        let (s, b) = call(
            &self.http,
            &self.addr,
            &self.location,
            None,
            Method::POST,
            "auth/approle/login",
            Some(json!({ "role_id": self.role_id, "secret_id": self.secret_id.expose() })),
        )
        .await?;
        match s {
            s if s.is_success() => {
                if let (Some(accessor), Ok(mut slot)) =
                    (b["auth"]["accessor"].as_str(), self.accessor.lock())
                {
                    *slot = Some(accessor.to_owned());
                }
                b["auth"]["client_token"]
                    .as_str()
                    .map(|t| Session {
                        token: t.to_owned(),
                        renewed: std::time::Instant::now(),
                    })
                    .ok_or_else(|| Error::Unavailable("no client_token".into()))
            }
            StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => Err(Error::BadCredential(
                "the vault refused the app's boot credential".into(),
            )),
            s => Err(Error::Unavailable(format!("login: HTTP {s}"))),
        }
    }

    /// Reads a path of another app with this app's token: refused by the vault's policy.
    /// Exists so tests can prove it.
    pub async fn get_of(&self, app: &AppId, name: &str) -> Result<Secret> {
        self.read(&self.location.data_path(app, name), name).await
    }

    /// Renews the token when [`RENEW_EVERY`] has passed; a token the vault no longer renews
    /// is dropped (the next read logs in again, which a used secret id cannot).
    async fn renew(&self, session: &mut Option<Session>) -> Result<()> {
        let Some(s) = session
            .as_mut()
            .filter(|s| s.renewed.elapsed() >= RENEW_EVERY)
        else {
            return Ok(());
        };
        let (status, _) = call(
            &self.http,
            &self.addr,
            &self.location,
            Some(&s.token),
            Method::POST,
            "auth/token/renew-self",
            Some(json!({})),
        )
        .await?;
        if status.is_success() {
            s.renewed = std::time::Instant::now();
        } else {
            *session = None;
        }
        Ok(())
    }

    async fn read(&self, path: &str, name: &str) -> Result<Secret> {
        let mut session = self.token.lock().await;
        self.renew(&mut session).await?;
        let mut relogged = false;
        loop {
            let token = match session.as_ref() {
                Some(s) => s.token.clone(),
                None => {
                    let fresh = self.login().await?;
                    relogged = true;
                    let token = fresh.token.clone();
                    *session = Some(fresh);
                    token
                }
            };
            let (s, b) = call(
                &self.http,
                &self.addr,
                &self.location,
                Some(&token),
                Method::GET,
                path,
                None,
            )
            .await?;
            if s == StatusCode::FORBIDDEN && b["errors"].to_string().contains("permission denied") {
                // A cached token may have expired: one fresh login (which a used secret id
                // cannot give), then the vault's answer stands.
                if relogged {
                    return Err(Error::Denied);
                }
                match self.login().await {
                    Ok(fresh) => {
                        *session = Some(fresh);
                        relogged = true;
                        continue;
                    }
                    Err(_) => return Err(Error::Denied),
                }
            }
            expect_ok(s, &b, name)?;
            return value_of(&b, name);
        }
    }
}

impl VaultReader for OpenBaoReader {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Secret>> {
        Box::pin(async move {
            check_name(name)?;
            let path = self.location.data_path(&self.app, name);
            self.read(&path, name).await
        })
    }

    fn session(&self) -> Option<String> {
        self.accessor.lock().ok().and_then(|a| a.clone())
    }
}
