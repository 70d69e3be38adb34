//! `cluster.json`: the port and generated superuser password of a cluster, mode 0600.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, Result, io_err, write_private};

/// A generated password. Redacted in `Debug`; [`Password::expose`] is the only way to read it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// 32 random bytes, hex encoded.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct State {
    pub port: u16,
    pub password: Password,
    /// False between writing this file and `initdb` finishing.
    pub initialized: bool,
}

impl State {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            password: Password::generate(),
            initialized: false,
        }
    }

    pub fn load(path: &Path) -> Result<Option<Self>> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::BadState {
                    path: path.to_path_buf(),
                    detail: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// Writes to a temporary file and renames it over the old one, so a crash leaves either.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::BadState {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        write_private(&tmp, &bytes)?;
        fs::rename(&tmp, path).map_err(io_err(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_long_random_and_redacted_in_debug() {
        let a = Password::generate();
        let b = Password::generate();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a, b);
        assert!(!format!("{a:?}").contains(a.expose()));
    }
}
