//! The platform's side of the embedded vault: the master key, each app's key wrapped under it,
//! and sealed writes (the format is `bulkhead_vault::embedded`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bulkhead_model::AppId;
use bulkhead_vault::embedded::{
    aad, app_dir, io, open, read_secret, seal, secret_path, write_atomic,
};
use bulkhead_vault::{BootCredential, BoxFuture, Error, Result, Secret, check_name};

use crate::VaultAdmin;

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
        bulkhead_vault::decode_key(text)
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

impl EmbeddedAdmin {
    /// Opens (creating) the vault directory, mode 0711: nobody else may list it, and a
    /// worker's compartment may pass through to its own app's directory (which only its group
    /// reads). The master key must not be stored under `root`.
    pub fn open(root: &Path, master: MasterKey) -> Result<Self> {
        fs::create_dir_all(root).map_err(io)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o711)).map_err(io)?;
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
