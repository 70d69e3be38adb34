//! The platform's side of OpenBao / HashiCorp Vault: one KV v2 path, one policy and one AppRole
//! per app (the reader is `bulkhead_vault::openbao`).

use bulkhead_model::AppId;
use bulkhead_vault::openbao::{
    Location, SECRET_ID_TTL, TOKEN_PERIOD, call, client, expect_ok, role, value_of,
};
use bulkhead_vault::{BootCredential, BoxFuture, Error, Result, Secret, check_name};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::VaultAdmin;

/// The platform's handle on OpenBao, with an admin token.
#[derive(Debug, Clone)]
pub struct OpenBaoAdmin {
    addr: String,
    token: Secret,
    location: Location,
    http: reqwest::Client,
}

impl OpenBaoAdmin {
    pub fn new(addr: &str, token: Secret) -> Result<Self> {
        Ok(Self {
            addr: addr.to_owned(),
            token,
            location: Location::default(),
            http: client(None)?,
        })
    }

    /// The same admin, trusting only the CA certificates `ca_pem` (`[vault] ca_file`).
    pub fn trusting(mut self, ca_pem: &str) -> Result<Self> {
        self.http = client(Some(ca_pem))?;
        Ok(self)
    }

    /// The same admin for secrets at `location` (mount and namespace).
    pub fn at(mut self, location: Location) -> Self {
        self.location = location;
        self
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
            &self.location,
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
                "path \"{}/data/bulkhead/apps/{app}/*\" {{ capabilities = [\"read\"] }}\n",
                self.location.mount
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
                        // Periodic tokens, renewed by the worker; each dies a period after
                        // its last renewal.
                        "token_period": TOKEN_PERIOD,
                        "token_ttl": 0,
                        "token_max_ttl": 0,
                        "secret_id_ttl": SECRET_ID_TTL,
                        "secret_id_num_uses": 1,
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
            // The previous workers' secret ids, used or not, go before a new one is issued.
            let (s, b) = self
                .admin(
                    Method::from_bytes(b"LIST").map_err(|e| Error::Unavailable(e.to_string()))?,
                    &format!("auth/approle/role/{role}/secret-id"),
                    None,
                )
                .await?;
            if s.is_success() {
                for accessor in b["data"]["keys"].as_array().into_iter().flatten() {
                    let (s, b) = self
                        .admin(
                            Method::POST,
                            &format!("auth/approle/role/{role}/secret-id-accessor/destroy"),
                            Some(json!({ "secret_id_accessor": accessor })),
                        )
                        .await?;
                    expect_ok(s, &b, "destroying a previous secret-id")?;
                }
            }
            // One login, within minutes: the credential is spent by the worker's boot.
            let (s, b) = self
                .admin(
                    Method::POST,
                    &format!("auth/approle/role/{role}/secret-id"),
                    Some(json!({ "num_uses": 1, "ttl": SECRET_ID_TTL })),
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

    fn revoke_session<'a>(&'a self, accessor: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (s, b) = self
                .admin(
                    Method::POST,
                    "auth/token/revoke-accessor",
                    Some(json!({ "accessor": accessor })),
                )
                .await?;
            // Already gone (expired, or revoked with its app) is what was wanted.
            if s.is_success() || s == StatusCode::BAD_REQUEST {
                Ok(())
            } else {
                expect_ok(s, &b, "revoking a worker's token")
            }
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
                    &self.location.data_path(app, name),
                    Some(json!({ "data": { "value": value.expose() } })),
                )
                .await?;
            expect_ok(s, &b, name)
        })
    }

    fn get<'a>(&'a self, app: &'a AppId, name: &'a str) -> BoxFuture<'a, Result<Secret>> {
        Box::pin(async move {
            check_name(name)?;
            let (s, b) = self
                .admin(Method::GET, &self.location.data_path(app, name), None)
                .await?;
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
                    &self.location.metadata_path(app, &format!("/{name}")),
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
                .admin(Method::DELETE, &self.location.metadata_path(app, ""), None)
                .await?;
            let list =
                Method::from_bytes(b"LIST").map_err(|e| Error::Unavailable(e.to_string()))?;
            let (s, b) = self
                .admin(list, &self.location.metadata_path(app, ""), None)
                .await?;
            if s.is_success()
                && let Some(keys) = b["data"]["keys"].as_array()
            {
                for k in keys.iter().filter_map(Value::as_str) {
                    let (s, b) = self
                        .admin(
                            Method::DELETE,
                            &self.location.metadata_path(app, &format!("/{k}")),
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
