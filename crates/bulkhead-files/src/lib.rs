//! Per-app file buckets through `object_store`, with tenant prefixes built only from
//! [`TenantId`] (invariant 8).
//!
//! An app's bucket is its own root: a directory created 0700 for the local backend (the
//! default), or a bucket with the app's own credentials on S3. Inside it, a tenant's files live
//! under `tenants/<tenant>/`; because tenant ids contain no `/`, no tenant's prefix is a prefix
//! of another's. Object keys from callers are validated, never normalised: `..`, `.`, empty or
//! absolute segments, backslashes and control characters are refused.
//!
//! This crate must not build a path from a raw tenant string, and must not depend on pg/axum.

pub mod garage;

use std::os::unix::fs::PermissionsExt;
use std::path::Path as FsPath;
use std::sync::Arc;

use bulkhead_model::{AppId, Secret, TenantId};
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

/// File errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid object key {0:?}: use segments of [A-Za-z0-9._-] separated by '/', no '.' or '..'"
    )]
    BadKey(String),
    #[error("no such file {0:?}")]
    NotFound(String),
    #[error("file larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// The backend refused this app's credentials (another app's bucket, a revoked key).
    #[error("access denied by the storage backend")]
    Denied,
    #[error("storage: {0}")]
    Storage(String),
    /// The upload's body could not be read (the client went away).
    #[error("reading the upload: {0}")]
    Body(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl bulkhead_model::Coded for Error {
    fn code(&self) -> bulkhead_model::ErrorCode {
        use bulkhead_model::ErrorCode as C;
        match self {
            Error::BadKey(_) => C::BadQuery,
            Error::NotFound(_) => C::NotFound,
            Error::TooLarge { .. } => C::PayloadTooLarge,
            Error::Body(_) => C::BadRequest,
            Error::Denied | Error::Storage(_) => C::Internal,
        }
    }

    fn field(&self) -> Option<&str> {
        matches!(self, Error::BadKey(_)).then_some("key")
    }
}

/// Part size of streamed uploads (S3's minimum part size).
pub const PART_BYTES: usize = 5 * 1024 * 1024;

fn storage(e: object_store::Error) -> Error {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => Error::Denied,
        // object_store reports some S3 refusals (listings) only as a generic error whose
        // text carries the status and the S3 error code.
        e => {
            let text = e.to_string();
            if text.contains("403 Forbidden") || text.contains("<Code>AccessDenied</Code>") {
                Error::Denied
            } else {
                Error::Storage(text)
            }
        }
    }
}

/// An app's bucket on an S3-compatible server, with that app's own key (kept in the app's
/// vault space; redacted in `Debug`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct S3Bucket {
    /// e.g. `http://127.0.0.1:3900` or `https://s3.internal`.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

/// Longest key accepted.
const MAX_KEY: usize = 512;

/// Checks a caller's key and returns its path segments.
pub fn check_key(key: &str) -> Result<Vec<&str>> {
    let bad = || Error::BadKey(key.to_owned());
    if key.is_empty() || key.len() > MAX_KEY || key.starts_with('/') || key.contains('\\') {
        return Err(bad());
    }
    let segments: Vec<&str> = key.split('/').collect();
    for s in &segments {
        let ok = !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(bad());
        }
    }
    Ok(segments)
}

/// One app's bucket.
#[derive(Debug, Clone)]
pub struct AppBucket {
    app: AppId,
    store: Arc<dyn ObjectStore>,
}

impl AppBucket {
    /// The local backend: `<root>/<app>/`, created with mode 0700.
    pub fn local(root: &FsPath, app: &AppId) -> Result<Self> {
        let dir = root.join(app.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| Error::Storage(e.to_string()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::Storage(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(&dir).map_err(storage)?;
        Ok(Self {
            app: app.clone(),
            store: Arc::new(store),
        })
    }

    /// The app's bucket on an S3-compatible server, reached with the app's own key only.
    pub fn s3(app: &AppId, bucket: &S3Bucket) -> Result<Self> {
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&bucket.endpoint)
            .with_region(&bucket.region)
            .with_bucket_name(&bucket.bucket)
            .with_access_key_id(&bucket.access_key_id)
            .with_secret_access_key(bucket.secret_access_key.expose())
            .with_allow_http(bucket.endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(storage)?;
        Ok(Self {
            app: app.clone(),
            store: Arc::new(store),
        })
    }

    /// Any other `object_store` backend.
    pub fn from_store(app: &AppId, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            app: app.clone(),
            store,
        }
    }

    pub fn app(&self) -> &AppId {
        &self.app
    }

    /// The files of one tenant.
    pub fn tenant(&self, tenant: &TenantId) -> TenantFiles {
        TenantFiles {
            store: self.store.clone(),
            tenant: tenant.clone(),
        }
    }
}

/// One tenant's files inside an app's bucket.
#[derive(Debug, Clone)]
pub struct TenantFiles {
    store: Arc<dyn ObjectStore>,
    tenant: TenantId,
}

impl TenantFiles {
    fn prefix(&self) -> Path {
        Path::from_iter(["tenants", self.tenant.as_str()])
    }

    fn path(&self, key: &str) -> Result<Path> {
        let segments = check_key(key)?;
        Ok(Path::from_iter(
            ["tenants", self.tenant.as_str()]
                .into_iter()
                .chain(segments),
        ))
    }

    pub async fn put(&self, key: &str, bytes: Bytes, limit: usize) -> Result<()> {
        if bytes.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        let path = self.path(key)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(storage)?;
        Ok(())
    }

    /// Stores a body that arrives in chunks without holding it whole. A body that ends within
    /// one part ([`PART_BYTES`]) goes up in one request; a longer one as a multipart upload
    /// with at most two parts in flight. Over `limit` bytes, or when the body fails, the upload
    /// is aborted and nothing is stored (a multipart upload is invisible until it completes).
    /// Returns the size.
    pub async fn put_stream<S, E>(&self, key: &str, mut body: S, limit: usize) -> Result<usize>
    where
        S: futures_util::Stream<Item = std::result::Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.path(key)?;
        let mut size = 0usize;
        let mut next = async |size: &mut usize| -> Result<Option<Bytes>> {
            let chunk = body
                .try_next()
                .await
                .map_err(|e| Error::Body(e.to_string()))?;
            if let Some(c) = &chunk {
                *size += c.len();
                if *size > limit {
                    return Err(Error::TooLarge { limit });
                }
            }
            Ok(chunk)
        };
        // The first part is buffered: most files end within it and need one request.
        let mut first = Vec::new();
        loop {
            match next(&mut size).await? {
                Some(c) => {
                    first.extend_from_slice(&c);
                    if first.len() >= PART_BYTES {
                        break;
                    }
                }
                None => {
                    self.store
                        .put(&path, PutPayload::from(first))
                        .await
                        .map_err(storage)?;
                    return Ok(size);
                }
            }
        }
        let upload = self.store.put_multipart(&path).await.map_err(storage)?;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        writer.write(&first);
        drop(first);
        loop {
            let chunk = match next(&mut size).await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            if let Err(e) = writer.wait_for_capacity(2).await {
                let _ = writer.abort().await;
                return Err(storage(e));
            }
            writer.write(&chunk);
        }
        writer.finish().await.map_err(storage)?;
        Ok(size)
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(storage),
            Err(object_store::Error::NotFound { .. }) => Err(Error::NotFound(key.to_owned())),
            Err(e) => Err(storage(e)),
        }
    }

    /// Keys of this tenant's files, relative to its prefix, sorted.
    pub async fn list(&self) -> Result<Vec<String>> {
        let prefix = self.prefix();
        let strip = format!("{prefix}/");
        let mut keys: Vec<String> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect::<Vec<_>>()
            .await
            .map_err(storage)?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&strip).map(str::to_owned))
            .collect();
        keys.sort();
        Ok(keys)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage(e)),
        }
    }

    /// Removes every file of the tenant (tenant deletion); returns how many.
    pub async fn delete_all(&self) -> Result<usize> {
        let keys = self.list().await?;
        for k in &keys {
            self.delete(k).await?;
        }
        Ok(keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated_not_normalised() {
        for ok in ["a.pdf", "invoices/2026/11.pdf", "A_b-c.1"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "a\\b",
            "a b",
            "a\0b",
            "..",
            ".",
            "ü.txt",
            &"a".repeat(600),
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("BULKHEAD_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
        ))]

        /// Any Unicode key is refused or made only of safe ASCII segments, never a panic.
        #[test]
        fn arbitrary_keys_are_refused_or_safe(key in "\\PC{0,40}|[a./\\\\é\u{0}-]{0,20}") {
            if let Ok(segments) = check_key(&key) {
                for s in segments {
                    proptest::prop_assert!(s != "." && s != ".." && !s.is_empty());
                    proptest::prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
                }
            }
        }
    }
}
