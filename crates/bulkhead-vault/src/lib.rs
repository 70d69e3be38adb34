//! Secrets per app, kept where one app's credential can never read another's.
//!
//! The reader's side and the formats: an app's worker holds only a [`VaultReader`] opened with
//! its own [`BootCredential`]. The platform's side (creating an app's space, writing its
//! secrets, handing out boot credentials, the master key) is the separate crate
//! `bulkhead-vault-admin`, so a worker cannot even link it. Backends:
//!
//! - [`embedded`]: files under a directory, envelope encryption with XChaCha20-Poly1305. Each
//!   app's secrets are encrypted under that app's own key; the app key is stored only wrapped
//!   under the platform master key, which comes from a file or env var and never lives beside
//!   the data.
//! - [`openbao`]: OpenBao / HashiCorp Vault, KV v2 + AppRole, one policy per app that allows
//!   only that app's path.
//!
//! This crate must not log secret values, and must not depend on pg or axum.

pub mod embedded;
pub mod openbao;

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use bulkhead_model::AppId;

/// Vault errors. `Denied` is what a credential gets outside its own app.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("access denied")]
    Denied,
    #[error("secret {0:?} not found")]
    NotFound(String),
    #[error("invalid secret name {0:?}: use [a-z0-9_-] segments separated by '/'")]
    BadName(String),
    #[error("vault unavailable: {0}")]
    Unavailable(String),
    #[error("vault data is corrupt or was tampered with: {0}")]
    Corrupt(String),
    #[error("I/O: {0}")]
    Io(String),
    #[error("bad credential: {0}")]
    BadCredential(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use bulkhead_model::Secret;

/// Checks a secret name (`db/runtime-password`): lowercase segments, no `..`, no absolute
/// paths — it becomes part of a file path or a Vault path.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.split('/').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::BadName(name.to_owned()))
    }
}

/// What a worker boots with: enough to read its own app's secrets and nothing else.
/// Serialised as one string for an env var or `*_FILE` (`embedded:<hex key>` or
/// `approle:<role_id>:<secret_id>`); redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub enum BootCredential {
    Embedded { key: [u8; 32] },
    AppRole { role_id: String, secret_id: String },
}

impl fmt::Debug for BootCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootCredential::Embedded { .. } => f.write_str("BootCredential::Embedded(<redacted>)"),
            BootCredential::AppRole { role_id, .. } => {
                write!(f, "BootCredential::AppRole({role_id}, <redacted>)")
            }
        }
    }
}

impl BootCredential {
    pub fn to_secret_string(&self) -> Secret {
        match self {
            BootCredential::Embedded { key } => Secret::new(format!(
                "embedded:{}",
                key.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )),
            BootCredential::AppRole { role_id, secret_id } => {
                Secret::new(format!("approle:{role_id}:{secret_id}"))
            }
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix("embedded:") {
            return Ok(BootCredential::Embedded {
                key: decode_key(hex)?,
            });
        }
        if let Some(rest) = s.strip_prefix("approle:")
            && let Some((role_id, secret_id)) = rest.split_once(':')
            && !role_id.is_empty()
            && !secret_id.is_empty()
        {
            return Ok(BootCredential::AppRole {
                role_id: role_id.to_owned(),
                secret_id: secret_id.to_owned(),
            });
        }
        Err(Error::BadCredential(
            "expected embedded:<hex> or approle:<role_id>:<secret_id>".into(),
        ))
    }
}

/// A 32-byte key written as 64 hex characters (boot credentials, master keys, signing keys).
pub fn decode_key(hex: &str) -> Result<[u8; 32]> {
    let hex = hex.trim();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(|| Error::BadCredential("key is not hex".into()))?;
    bytes
        .try_into()
        .map_err(|_| Error::BadCredential("key must be 32 bytes (64 hex characters)".into()))
}

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An app worker's side: reads its own app's secrets.
pub trait VaultReader: Send + Sync {
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Secret>>;

    /// The accessor of this reader's vault session (OpenBao: its token's accessor), once it
    /// has logged in; the supervisor revokes it when the worker is replaced.
    fn session(&self) -> Option<String> {
        None
    }
}

/// Opens an app worker's reader from its boot credential: an embedded key opens the vault
/// directory `dir`; an AppRole logs in to the OpenBao server at `addr` and reads at
/// `location` (mount and namespace).
pub fn open_reader(
    credential: &BootCredential,
    app: AppId,
    dir: &std::path::Path,
    addr: Option<&str>,
    location: &openbao::Location,
    ca_pem: Option<&str>,
) -> Result<std::sync::Arc<dyn VaultReader>> {
    Ok(match credential {
        BootCredential::Embedded { .. } => {
            std::sync::Arc::new(embedded::EmbeddedReader::open(dir, app, credential)?)
        }
        BootCredential::AppRole { .. } => {
            let addr = addr.ok_or_else(|| {
                Error::BadCredential("an AppRole credential needs the OpenBao address".into())
            })?;
            let reader = openbao::OpenBaoReader::new(addr, app, credential)?.at(location.clone());
            std::sync::Arc::new(match ca_pem {
                Some(pem) => reader.trusting(pem)?,
                None => reader,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_traversal_and_odd_characters() {
        for ok in ["db/runtime-password", "a", "x_1/y-2"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../b", "/abs", "a//b", "a/../b", "A", "a b", "a/.", "é"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn boot_credentials_round_trip_and_are_redacted() {
        let c = BootCredential::Embedded { key: [7; 32] };
        assert_eq!(
            BootCredential::parse(c.to_secret_string().expose()).unwrap(),
            c
        );
        assert!(!format!("{c:?}").contains("07"));
        let a = BootCredential::AppRole {
            role_id: "r".into(),
            secret_id: "s3cret".into(),
        };
        assert_eq!(
            BootCredential::parse(a.to_secret_string().expose()).unwrap(),
            a
        );
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(BootCredential::parse("plain").is_err());
        assert!(BootCredential::parse("embedded:zz").is_err());
    }
}
