//! Per-app buckets and keys on a Garage cluster, through its admin API (v2).
//!
//! Each app gets a bucket `bulkhead-<app>` and a key `bulkhead-<app>` allowed to read and write
//! that bucket only; Garage refuses the key everywhere else (403). Provisioning is idempotent:
//! an existing bucket or key of that name is reused, so a run cut short is finished by running
//! it again. The admin token stays with the platform; only the app's key reaches its worker.

use std::time::Duration;

use bulkhead_model::{AppId, Secret};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{Error, Result, S3Bucket};

/// The platform's handle on a Garage cluster.
#[derive(Clone)]
pub struct GarageAdmin {
    admin_url: String,
    token: Secret,
    /// Where apps reach the S3 API, and its region (Garage's `s3_region`).
    s3_endpoint: String,
    region: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for GarageAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarageAdmin")
            .field("admin_url", &self.admin_url)
            .field("s3_endpoint", &self.s3_endpoint)
            .finish_non_exhaustive()
    }
}

/// The bucket and key name of an app.
pub fn bucket_name(app: &AppId) -> String {
    format!("bulkhead-{app}")
}

impl GarageAdmin {
    pub fn new(admin_url: &str, token: Secret, s3_endpoint: &str, region: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Storage(format!("http client: {e}")))?;
        Ok(Self {
            admin_url: admin_url.trim_end_matches('/').to_owned(),
            token,
            s3_endpoint: s3_endpoint.to_owned(),
            region: region.to_owned(),
            http,
        })
    }

    async fn call(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("{}/v2/{endpoint}", self.admin_url))
            .bearer_auth(self.token.expose())
            .query(query);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Storage(format!("garage admin {endpoint}: {e}")))?;
        let status = resp.status();
        let body = resp.json().await.unwrap_or(Value::Null);
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Denied);
        }
        Ok((status, body))
    }

    async fn ok(
        &self,
        method: Method,
        endpoint: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Value> {
        match self.call(method, endpoint, query, body).await? {
            (s, b) if s.is_success() => Ok(b),
            (s, b) => Err(Error::Storage(format!(
                "garage admin {endpoint}: HTTP {s}: {b}"
            ))),
        }
    }

    fn id(body: &Value, field: &str, what: &str) -> Result<String> {
        body[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::Storage(format!("garage admin {what}: no {field} in {body}")))
    }

    /// Creates (or finds) the app's bucket and key, allows the key on that bucket only, and
    /// returns what the app's worker needs to reach it.
    pub async fn ensure_app_bucket(&self, app: &AppId) -> Result<S3Bucket> {
        let name = bucket_name(app);
        let bucket_id = match self
            .call(
                Method::GET,
                "GetBucketInfo",
                &[("globalAlias", &name)],
                None,
            )
            .await?
        {
            (s, b) if s.is_success() => Self::id(&b, "id", "GetBucketInfo")?,
            (StatusCode::NOT_FOUND, _) => {
                let b = self
                    .ok(
                        Method::POST,
                        "CreateBucket",
                        &[],
                        Some(json!({ "globalAlias": name })),
                    )
                    .await?;
                Self::id(&b, "id", "CreateBucket")?
            }
            (s, b) => {
                return Err(Error::Storage(format!(
                    "garage admin GetBucketInfo: HTTP {s}: {b}"
                )));
            }
        };
        let keys = self.ok(Method::GET, "ListKeys", &[], None).await?;
        let existing = keys
            .as_array()
            .into_iter()
            .flatten()
            .find(|k| k["name"] == name.as_str())
            .and_then(|k| k["id"].as_str().map(str::to_owned));
        let key = match existing {
            Some(id) => {
                self.ok(
                    Method::GET,
                    "GetKeyInfo",
                    &[("id", &id), ("showSecretKey", "true")],
                    None,
                )
                .await?
            }
            None => {
                self.ok(
                    Method::POST,
                    "CreateKey",
                    &[],
                    Some(json!({ "name": name })),
                )
                .await?
            }
        };
        let access_key_id = Self::id(&key, "accessKeyId", "key")?;
        let secret = Self::id(&key, "secretAccessKey", "key")?;
        self.ok(
            Method::POST,
            "AllowBucketKey",
            &[],
            Some(json!({
                "bucketId": bucket_id,
                "accessKeyId": access_key_id,
                "permissions": { "read": true, "write": true, "owner": false },
            })),
        )
        .await?;
        Ok(S3Bucket {
            endpoint: self.s3_endpoint.clone(),
            region: self.region.clone(),
            bucket: name,
            access_key_id,
            secret_access_key: Secret::new(secret),
        })
    }

    /// Deletes the app's key (its bucket's data stays until the bucket is emptied and removed
    /// by the operator). Absent is fine.
    pub async fn delete_app_key(&self, app: &AppId) -> Result<()> {
        let keys = self.ok(Method::GET, "ListKeys", &[], None).await?;
        for k in keys.as_array().into_iter().flatten() {
            if k["name"] == bucket_name(app).as_str()
                && let Some(id) = k["id"].as_str()
            {
                self.ok(Method::POST, "DeleteKey", &[("id", id)], None)
                    .await?;
            }
        }
        Ok(())
    }
}
