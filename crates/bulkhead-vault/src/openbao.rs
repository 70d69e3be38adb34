//! OpenBao / HashiCorp Vault: KV v2 at `secret/`, AppRole auth.
//!
//! Each app's secrets live under `secret/data/bulkhead/apps/<app>/`. Creating an app writes
//! an ACL policy `bulkhead-app-<app>` that allows reading that path and nothing else, and an
//! AppRole of the same name bound to it; the app's boot credential is the role id and a secret
//! id. The platform's own token (admin) never leaves the platform.

use std::time::Duration;

use bulkhead_model::AppId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::{
    BootCredential, BoxFuture, Error, Result, Secret, VaultAdmin, VaultReader, check_name,
};

fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Unavailable(e.to_string()))
}

fn role(app: &AppId) -> String {
    format!("bulkhead-app-{app}")
}

fn data_path(app: &AppId, name: &str) -> String {
    format!("secret/data/bulkhead/apps/{app}/{name}")
}

async fn call(
    http: &reqwest::Client,
    addr: &str,
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
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| Error::Unavailable(format!("{url}: {e}")))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| Error::Unavailable(e.to_string()))?;
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok((status, value))
}

fn expect_ok(status: StatusCode, body: &Value, what: &str) -> Result<()> {
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

/// The platform's handle on OpenBao, with an admin token.
#[derive(Debug, Clone)]
pub struct OpenBaoAdmin {
    addr: String,
    token: Secret,
    http: reqwest::Client,
}

impl OpenBaoAdmin {
    pub fn new(addr: &str, token: Secret) -> Result<Self> {
        Ok(Self {
            addr: addr.to_owned(),
            token,
            http: client()?,
        })
    }

    async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        call(
            &self.http,
            &self.addr,
            Some(self.token.expose()),
            method,
            path,
            body,
        )
        .await
    }

    /// Enables AppRole auth when it is not yet enabled.
    pub async fn ensure_approle(&self) -> Result<()> {
        let (status, body) = self.admin(Method::GET, "sys/auth", None).await?;
        expect_ok(status, &body, "sys/auth")?;
        if body.get("approle/").is_some() || body["data"].get("approle/").is_some() {
            return Ok(());
        }
        let (status, body) = self
            .admin(
                Method::POST,
                "sys/auth/approle",
                Some(json!({"type": "approle"})),
            )
            .await?;
        expect_ok(status, &body, "enable approle")
    }
}

impl VaultAdmin for OpenBaoAdmin {
    fn create_app<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<BootCredential>> {
        Box::pin(async move {
            self.ensure_approle().await?;
            let role = role(app);
            let policy = format!(
                "path \"secret/data/bulkhead/apps/{app}/*\" {{ capabilities = [\"read\"] }}\n"
            );
            let (s, b) = self
                .admin(
                    Method::PUT,
                    &format!("sys/policies/acl/{role}"),
                    Some(json!({ "policy": policy })),
                )
                .await?;
            expect_ok(s, &b, "policy")?;
            let (s, b) = self
                .admin(
                    Method::POST,
                    &format!("auth/approle/role/{role}"),
                    Some(json!({
                        "token_policies": [role],
                        "token_ttl": "1h",
                        "token_max_ttl": "4h",
                        "secret_id_ttl": "0",
                    })),
                )
                .await?;
            expect_ok(s, &b, "approle")?;
            self.boot_credential(app).await
        })
    }

    fn boot_credential<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<BootCredential>> {
        Box::pin(async move {
            let role = role(app);
            let (s, b) = self
                .admin(
                    Method::GET,
                    &format!("auth/approle/role/{role}/role-id"),
                    None,
                )
                .await?;
            if s == StatusCode::NOT_FOUND {
                return Err(Error::NotFound(format!("app {app}")));
            }
            expect_ok(s, &b, "role-id")?;
            let role_id = b["data"]["role_id"]
                .as_str()
                .ok_or_else(|| Error::Unavailable("no role_id".into()))?
                .to_owned();
            let (s, b) = self
                .admin(
                    Method::POST,
                    &format!("auth/approle/role/{role}/secret-id"),
                    None,
                )
                .await?;
            expect_ok(s, &b, "secret-id")?;
            let secret_id = b["data"]["secret_id"]
                .as_str()
                .ok_or_else(|| Error::Unavailable("no secret_id".into()))?
                .to_owned();
            Ok(BootCredential::AppRole { role_id, secret_id })
        })
    }

    fn put<'a>(
        &'a self,
        app: &'a AppId,
        name: &'a str,
        value: &'a Secret,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_name(name)?;
            let (s, b) = self
                .admin(
                    Method::POST,
                    &data_path(app, name),
                    Some(json!({ "data": { "value": value.expose() } })),
                )
                .await?;
            expect_ok(s, &b, name)
        })
    }

    fn get<'a>(&'a self, app: &'a AppId, name: &'a str) -> BoxFuture<'a, Result<Secret>> {
        Box::pin(async move {
            check_name(name)?;
            let (s, b) = self.admin(Method::GET, &data_path(app, name), None).await?;
            expect_ok(s, &b, name)?;
            value_of(&b, name)
        })
    }

    fn delete<'a>(&'a self, app: &'a AppId, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_name(name)?;
            let (s, b) = self
                .admin(
                    Method::DELETE,
                    &format!("secret/metadata/bulkhead/apps/{app}/{name}"),
                    None,
                )
                .await?;
            if s == StatusCode::NOT_FOUND {
                return Ok(());
            }
            expect_ok(s, &b, name)
        })
    }

    fn delete_app<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let role = role(app);
            let _ = self
                .admin(
                    Method::DELETE,
                    &format!("secret/metadata/bulkhead/apps/{app}"),
                    None,
                )
                .await?;
            let list =
                Method::from_bytes(b"LIST").map_err(|e| Error::Unavailable(e.to_string()))?;
            let (s, b) = self
                .admin(list, &format!("secret/metadata/bulkhead/apps/{app}"), None)
                .await?;
            if s.is_success()
                && let Some(keys) = b["data"]["keys"].as_array()
            {
                for k in keys.iter().filter_map(Value::as_str) {
                    let (s, b) = self
                        .admin(
                            Method::DELETE,
                            &format!("secret/metadata/bulkhead/apps/{app}/{k}"),
                            None,
                        )
                        .await?;
                    expect_ok(s, &b, k)?;
                }
            }
            for path in [
                format!("auth/approle/role/{role}"),
                format!("sys/policies/acl/{role}"),
            ] {
                let (s, b) = self.admin(Method::DELETE, &path, None).await?;
                if s != StatusCode::NOT_FOUND {
                    expect_ok(s, &b, &path)?;
                }
            }
            Ok(())
        })
    }
}

fn value_of(body: &Value, name: &str) -> Result<Secret> {
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
    token: Mutex<Option<String>>,
    http: reqwest::Client,
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
                http: client()?,
            }),
            BootCredential::Embedded { .. } => Err(Error::BadCredential(
                "an embedded key cannot log in to OpenBao".into(),
            )),
        }
    }

    async fn login(&self) -> Result<String> {
        let (s, b) = call(
            &self.http,
            &self.addr,
            None,
            Method::POST,
            "auth/approle/login",
            Some(json!({ "role_id": self.role_id, "secret_id": self.secret_id.expose() })),
        )
        .await?;
        match s {
            s if s.is_success() => b["auth"]["client_token"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::Unavailable("no client_token".into())),
            StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN => Err(Error::BadCredential(
                "the vault refused the app's boot credential".into(),
            )),
            s => Err(Error::Unavailable(format!("login: HTTP {s}"))),
        }
    }

    /// Reads a path of another app with this app's token: refused by the vault's policy.
    /// Exists so tests can prove it.
    pub async fn get_of(&self, app: &AppId, name: &str) -> Result<Secret> {
        self.read(&data_path(app, name), name).await
    }

    async fn read(&self, path: &str, name: &str) -> Result<Secret> {
        let mut token = self.token.lock().await;
        // A cached token may have expired: one fresh login, then the vault's answer stands.
        for fresh in [token.is_none(), true] {
            if fresh {
                *token = Some(self.login().await?);
            }
            let t = token.clone().unwrap_or_default();
            let (s, b) = call(&self.http, &self.addr, Some(&t), Method::GET, path, None).await?;
            if s == StatusCode::FORBIDDEN && b["errors"].to_string().contains("permission denied") {
                if fresh {
                    return Err(Error::Denied);
                }
                continue;
            }
            expect_ok(s, &b, name)?;
            return value_of(&b, name);
        }
        Err(Error::Denied)
    }
}

impl VaultReader for OpenBaoReader {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Secret>> {
        Box::pin(async move {
            check_name(name)?;
            let path = data_path(&self.app, name);
            self.read(&path, name).await
        })
    }
}
