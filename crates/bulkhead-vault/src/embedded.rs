//! The embedded vault: files under a directory, envelope encryption. This crate has the
//! reader (an app's worker) and the file format; the platform's side (master key, app keys,
//! writes) is `bulkhead-vault-admin`.
//!
//! Layout: `<root>/apps/<app>/key.wrapped` holds the app's 32-byte key encrypted under the
//! master key; `<root>/apps/<app>/secrets/<name>.sealed` holds each secret encrypted under the
//! app's key. Every ciphertext is XChaCha20-Poly1305 with a random 24-byte nonce and the
//! app and name as associated data, so a file copied to another app or name does not open.
//! Writes go to a temporary file, are fsynced and renamed over the old one: a crash leaves the
//! old or the new value, never a torn one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bulkhead_model::AppId;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::{BootCredential, BoxFuture, Error, Result, Secret, VaultReader, check_name};

pub fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

pub fn seal(key: &[u8; 32], aad: &str, plain: &[u8]) -> Result<Vec<u8>> {
    let nonce: [u8; 24] = rand::random();
    let ct = XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| Error::Corrupt("encryption failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend(ct);
    Ok(out)
}

pub fn open(key: &[u8; 32], aad: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    if sealed.len() < 24 + 16 {
        return Err(Error::Corrupt("file too short".into()));
    }
    let (nonce, ct) = sealed.split_at(24);
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| Error::Denied)
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync directory), mode 0600 —
/// or, in a directory a worker's compartment reads through its group (mode 0750, group of its
/// own), mode 0640 with that group, so the worker reads what the platform writes.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dir = path
        .parent()
        .ok_or_else(|| Error::Io("path has no parent".into()))?;
    fs::create_dir_all(dir).map_err(io)?;
    let shared = fs::metadata(dir)
        .ok()
        .filter(|m| m.mode() & 0o050 == 0o050 && m.mode() & 0o007 == 0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        std::process::id()
    ));
    {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        if let Some(dir) = &shared {
            std::os::unix::fs::fchown(&f, None, Some(dir.gid())).map_err(io)?;
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640))
                .map_err(io)?;
        }
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

pub fn app_dir(root: &Path, app: &AppId) -> PathBuf {
    root.join("apps").join(app.as_str())
}

pub fn secret_path(root: &Path, app: &AppId, name: &str) -> PathBuf {
    app_dir(root, app)
        .join("secrets")
        .join(format!("{}.sealed", name.replace('/', "__")))
}

pub fn aad(app: &AppId, name: &str) -> String {
    format!("bulkhead-vault/{app}/{name}")
}

pub fn read_secret(root: &Path, app: &AppId, key: &[u8; 32], name: &str) -> Result<Secret> {
    check_name(name)?;
    let sealed = fs::read(secret_path(root, app, name)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound(name.to_owned())
        } else {
            io(e)
        }
    })?;
    let plain = open(key, &aad(app, name), &sealed)?;
    String::from_utf8(plain)
        .map(Secret::new)
        .map_err(|_| Error::Corrupt("secret is not UTF-8".into()))
}

/// An app worker's handle: its own app's secrets, opened with its boot credential only.
#[derive(Debug, Clone)]
pub struct EmbeddedReader {
    root: PathBuf,
    app: AppId,
    key: [u8; 32],
}

impl EmbeddedReader {
    pub fn open(root: &Path, app: AppId, credential: &BootCredential) -> Result<Self> {
        match credential {
            BootCredential::Embedded { key } => Ok(Self {
                root: root.to_path_buf(),
                app,
                key: *key,
            }),
            BootCredential::AppRole { .. } => Err(Error::BadCredential(
                "an AppRole credential cannot open the embedded vault".into(),
            )),
        }
    }

    /// Reads a secret of another app with this app's key: always refused. Exists so tests
    /// can prove it.
    pub fn get_of(&self, app: &AppId, name: &str) -> Result<Secret> {
        read_secret(&self.root, app, &self.key, name)
    }
}

impl VaultReader for EmbeddedReader {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Secret>> {
        Box::pin(async move { read_secret(&self.root, &self.app, &self.key, name) })
    }
}
