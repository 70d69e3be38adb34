//! An app's file storage as its worker holds it: the bucket, the key that signs download
//! links, the upload limit and the accepted content types. The handlers are in
//! [`crate::files`].

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bulkhead_files::AppBucket;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Default largest upload.
pub const DEFAULT_MAX_BYTES: usize = 10 * 1024 * 1024;
/// Longest lifetime of a signed URL.
pub const MAX_SIGNED_SECS: u64 = 24 * 3600;

/// Content types accepted for upload, each with the leading bytes it must start with (empty:
/// anything). The declared type must be one of these and match the content.
pub(crate) const CONTENT_TYPES: &[(&str, &[u8])] = &[
    ("application/pdf", b"%PDF-"),
    ("image/png", b"\x89PNG\r\n\x1a\n"),
    ("image/jpeg", b"\xff\xd8\xff"),
    ("image/gif", b"GIF8"),
    ("text/plain", b""),
    ("text/csv", b""),
    ("application/json", b""),
    ("application/octet-stream", b""),
];

/// The content types accepted for upload.
pub fn content_types() -> impl Iterator<Item = &'static str> {
    CONTENT_TYPES.iter().map(|(t, _)| *t)
}

/// An app's files, as its worker serves them.
pub struct FilesApi {
    pub(crate) bucket: AppBucket,
    signing_key: [u8; 32],
    pub(crate) max_bytes: usize,
}

impl std::fmt::Debug for FilesApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesApi")
            .field("bucket", &self.bucket)
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl FilesApi {
    /// `signing_key` signs download URLs (keep it in the app's vault space).
    pub fn new(bucket: AppBucket, signing_key: [u8; 32], max_bytes: usize) -> Self {
        Self {
            bucket,
            signing_key,
            max_bytes,
        }
    }

    /// The signature of a download of `key` in `tenant` valid until `exp` (HMAC-SHA256 over
    /// app, tenant, key and expiry).
    fn signature(&self, tenant: &str, key: &str, exp: u64) -> Option<Hmac<Sha256>> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.signing_key).ok()?;
        for part in [self.bucket.app().as_str(), tenant, key, &exp.to_string()] {
            mac.update(part.as_bytes());
            mac.update(b"\n");
        }
        Some(mac)
    }

    pub(crate) fn sign(&self, tenant: &str, key: &str, exp: u64) -> String {
        self.signature(tenant, key, exp)
            .map(|m| B64.encode(m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Checks a signature in constant time.
    pub(crate) fn verify(&self, tenant: &str, key: &str, exp: u64, sig: &str) -> bool {
        let Ok(bytes) = B64.decode(sig) else {
            return false;
        };
        self.signature(tenant, key, exp)
            .is_some_and(|m| m.verify_slice(&bytes).is_ok())
    }
}
