//! The embedded vault: files under a directory, envelope encryption.
//!
//! Layout: `<root>/apps/<app>/key.wrapped` holds the app's 32-byte key encrypted under the
//! master key; `<root>/apps/<app>/secrets/<name>.sealed` holds each secret encrypted under the
//! app's key. Every ciphertext is XChaCha20-Poly1305 with a random 24-byte nonce and the
//! app and name as associated data, so a file copied to another app or name does not open.
//! Writes go to a temporary file, are fsynced and renamed over the old one: a crash leaves the
//! old or the new value, never a torn one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bulkhead_model::AppId;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::{
    BootCredential, BoxFuture, Error, Result, Secret, VaultAdmin, VaultReader, check_name,
};

fn io(e: std::io::Error) -> Error {
    Error::Io(e.to_string())
}

fn seal(key: &[u8; 32], aad: &str, plain: &[u8]) -> Result<Vec<u8>> {
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

fn open(key: &[u8; 32], aad: &str, sealed: &[u8]) -> Result<Vec<u8>> {
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

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync directory), mode 0600.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Io("path has no parent".into()))?;
    fs::create_dir_all(dir).map_err(io)?;
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
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// The platform master key: 32 bytes from a file or an environment variable (hex).
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads 32 raw bytes or 64 hex characters.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(io)?;
        Self::decode(&bytes)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if let Ok(key) = <[u8; 32]>::try_from(bytes) {
            return Ok(Self(key));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::BadCredential("master key must be 32 bytes or 64 hex".into()))?;
        crate::decode_key(text)
            .map(Self)
            .map_err(|_| Error::BadCredential("master key must be 32 bytes or 64 hex".into()))
    }

    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key's bytes, for the platform's other sealing (realm signing keys).
    pub fn bytes(&self) -> [u8; 32] {
        self.0
    }
}

/// The platform's handle on an embedded vault.
#[derive(Debug, Clone)]
pub struct EmbeddedAdmin {
    root: PathBuf,
    master: MasterKey,
}

fn app_dir(root: &Path, app: &AppId) -> PathBuf {
    root.join("apps").join(app.as_str())
}

fn secret_path(root: &Path, app: &AppId, name: &str) -> PathBuf {
    app_dir(root, app)
        .join("secrets")
        .join(format!("{}.sealed", name.replace('/', "__")))
}

fn aad(app: &AppId, name: &str) -> String {
    format!("bulkhead-vault/{app}/{name}")
}

impl EmbeddedAdmin {
    /// Opens (creating) the vault directory, mode 0700. The master key must not be stored
    /// under `root`.
    pub fn open(root: &Path, master: MasterKey) -> Result<Self> {
        fs::create_dir_all(root).map_err(io)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(Self {
            root: root.to_path_buf(),
            master,
        })
    }

    fn app_key(&self, app: &AppId) -> Result<[u8; 32]> {
        let wrapped = fs::read(app_dir(&self.root, app).join("key.wrapped")).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(format!("app {app}"))
            } else {
                io(e)
            }
        })?;
        let plain = open(
            &self.master.0,
            &format!("bulkhead-vault/{app}/key"),
            &wrapped,
        )
        .map_err(|_| {
            Error::Corrupt(format!(
                "the key of app {app} does not open with this master key"
            ))
        })?;
        plain
            .try_into()
            .map_err(|_| Error::Corrupt("app key has the wrong length".into()))
    }

    fn create_app_sync(&self, app: &AppId) -> Result<BootCredential> {
        match self.app_key(app) {
            Ok(key) => Ok(BootCredential::Embedded { key }),
            Err(Error::NotFound(_)) => {
                let key: [u8; 32] = rand::random();
                let wrapped = seal(&self.master.0, &format!("bulkhead-vault/{app}/key"), &key)?;
                let dir = app_dir(&self.root, app);
                fs::create_dir_all(dir.join("secrets")).map_err(io)?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
                write_atomic(&dir.join("key.wrapped"), &wrapped)?;
                Ok(BootCredential::Embedded { key })
            }
            Err(e) => Err(e),
        }
    }
}

impl VaultAdmin for EmbeddedAdmin {
    fn create_app<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<BootCredential>> {
        Box::pin(async move { self.create_app_sync(app) })
    }

    fn boot_credential<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<BootCredential>> {
        Box::pin(async move {
            Ok(BootCredential::Embedded {
                key: self.app_key(app)?,
            })
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
            let key = self.app_key(app)?;
            let sealed = seal(&key, &aad(app, name), value.expose().as_bytes())?;
            write_atomic(&secret_path(&self.root, app, name), &sealed)
        })
    }

    fn get<'a>(&'a self, app: &'a AppId, name: &'a str) -> BoxFuture<'a, Result<Secret>> {
        Box::pin(async move {
            let key = self.app_key(app)?;
            read_secret(&self.root, app, &key, name)
        })
    }

    fn delete<'a>(&'a self, app: &'a AppId, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            check_name(name)?;
            match fs::remove_file(secret_path(&self.root, app, name)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(e)),
            }
        })
    }

    fn delete_app<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            match fs::remove_dir_all(app_dir(&self.root, app)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io(e)),
            }
        })
    }
}

fn read_secret(root: &Path, app: &AppId, key: &[u8; 32], name: &str) -> Result<Secret> {
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
