//! An app bundle as the platform stores and ships it: the manifest, `functions/` (ES modules)
//! and `public/` (a static front-end), content-addressed by a SHA-256 digest over every path
//! and byte. Paths are checked here once (no `..`, no absolute or hidden paths, only the
//! three places), so every reader of a bundle — the control plane, a worker serving
//! `public/` — gets only well-formed names.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's path inside a bundle.
pub const MANIFEST: &str = "manifest.yaml";
/// Most files one bundle holds.
pub const MAX_FILES: usize = 2_000;
/// Largest bundle, all files together (it is shipped to workers through the vault).
pub const MAX_BYTES: usize = 4 * 1024 * 1024;

/// Why a bundle's files are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {message}")]
    Path { path: String, message: String },
    #[error("the bundle has no {MANIFEST}")]
    NoManifest,
    #[error("{MANIFEST} is not UTF-8")]
    ManifestEncoding,
    #[error("the bundle holds {0} files; at most {MAX_FILES}")]
    TooManyFiles(usize),
    #[error("the bundle holds {0} bytes; at most {MAX_BYTES}")]
    TooLarge(usize),
    #[error("the stored bundle is not readable: {0}")]
    Encoding(String),
}

/// Checks a path inside a bundle: `manifest.yaml`, `functions/…` or `public/…`, relative,
/// `/`-separated, no empty, `.`, `..` or hidden segment, printable ASCII without `\`.
pub fn check_path(path: &str) -> Result<(), BundleError> {
    let bad = |message: &str| BundleError::Path {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    if path == MANIFEST {
        return Ok(());
    }
    if path.len() > 255 {
        return Err(bad("longer than 255 characters"));
    }
    if !path
        .chars()
        .all(|c| c.is_ascii_graphic() && c != '\\' && c != '%')
    {
        return Err(bad("only printable ASCII without '\\' or '%'"));
    }
    let mut segments = path.split('/');
    match segments.next() {
        Some("functions" | "public") => {}
        _ => return Err(bad("outside manifest.yaml, functions/ and public/")),
    }
    let mut any = false;
    for seg in segments {
        if seg.is_empty() || seg.starts_with('.') {
            return Err(bad("empty, relative or hidden segment"));
        }
        any = true;
    }
    if !any {
        return Err(bad("a directory, not a file"));
    }
    if path.starts_with("functions/") && !path.ends_with(".js") && !path.ends_with(".mjs") {
        return Err(bad(
            "functions/ holds JavaScript modules (.js or .mjs) only",
        ));
    }
    Ok(())
}

/// A bundle's files, every path checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    files: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Builds a bundle from `(path, bytes)` pairs, checking every path, the manifest's
    /// presence and the size limits.
    pub fn new(files: BTreeMap<String, Vec<u8>>) -> Result<Self, BundleError> {
        for path in files.keys() {
            check_path(path)?;
        }
        let manifest = files.get(MANIFEST).ok_or(BundleError::NoManifest)?;
        std::str::from_utf8(manifest).map_err(|_| BundleError::ManifestEncoding)?;
        if files.len() > MAX_FILES {
            return Err(BundleError::TooManyFiles(files.len()));
        }
        let total: usize = files.values().map(Vec::len).sum();
        if total > MAX_BYTES {
            return Err(BundleError::TooLarge(total));
        }
        Ok(Self { files })
    }

    /// The manifest's text.
    pub fn manifest_source(&self) -> &str {
        self.files
            .get(MANIFEST)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
    }

    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }

    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// The JavaScript modules: `functions/…` paths with their text (non-UTF-8 ones are
    /// reported by the checker, here they are empty).
    pub fn modules(&self) -> impl Iterator<Item = (&str, &str)> {
        self.files
            .iter()
            .filter(|(p, _)| p.starts_with("functions/"))
            .map(|(p, b)| (p.as_str(), std::str::from_utf8(b).unwrap_or_default()))
    }

    /// `sha256:` and the hex digest over every (path, length, bytes) in path order.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (path, bytes) in &self.files {
            h.update((path.len() as u64).to_be_bytes());
            h.update(path.as_bytes());
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        }
        let out = h.finalize();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// The stored form: JSON `{"files": {path: base64}}`.
    pub fn to_json(&self) -> String {
        let files: BTreeMap<&str, String> = self
            .files
            .iter()
            .map(|(p, b)| {
                (
                    p.as_str(),
                    base64::engine::general_purpose::STANDARD.encode(b),
                )
            })
            .collect();
        serde_json::to_string(&Stored { files }).unwrap_or_default()
    }

    /// Reads the stored form back, checking it as [`Bundle::new`] does.
    pub fn from_json(text: &str) -> Result<Self, BundleError> {
        let stored: Stored<String> =
            serde_json::from_str(text).map_err(|e| BundleError::Encoding(e.to_string()))?;
        let mut files = BTreeMap::new();
        for (path, b64) in stored.files {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|e| BundleError::Encoding(format!("{path}: {e}")))?;
            files.insert(path, bytes);
        }
        Self::new(files)
    }
}

#[derive(Serialize, Deserialize)]
struct Stored<K: Ord> {
    files: BTreeMap<K, String>,
}

/// Which bundle an app's workers run: the version number the control plane gave it and its
/// digest (the vault path of its content is [`crate::worker::bundle_path`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRef {
    pub version: i64,
    pub digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        list.iter()
            .map(|(p, b)| ((*p).to_owned(), b.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn paths_outside_the_three_places_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "functions/../manifest.yaml",
            "public/.env",
            "public/a//b",
            "public",
            "functions/x.txt",
            "other/x.js",
            "public/a\\b",
            "public/%2e%2e/x",
            "public/é",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in ["manifest.yaml", "functions/a/b.js", "public/index.html"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_digest_covers_names_and_bytes_and_the_stored_form_round_trips() {
        let a = Bundle::new(files(&[("manifest.yaml", "app: x"), ("public/a", "1")])).unwrap();
        let b = Bundle::new(files(&[("manifest.yaml", "app: x"), ("public/b", "1")])).unwrap();
        let c = Bundle::new(files(&[("manifest.yaml", "app: x"), ("public/a", "2")])).unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
        let back = Bundle::from_json(&a.to_json()).unwrap();
        assert_eq!(back, a);
        assert_eq!(back.digest(), a.digest());
        assert_eq!(
            Bundle::new(files(&[("public/a", "1")])),
            Err(BundleError::NoManifest)
        );
    }
}
