//! How the platform and its workers secure their connections to PostgreSQL: libpq's `sslmode`
//! values, the certificates a server's chain must lead to, and the platform's own client
//! certificate. Data only (the TLS itself is `bulkhead_pg::tls`); workers receive the
//! serialisable part in their configuration, never the client key.

use serde::{Deserialize, Serialize};

use crate::Secret;

/// libpq's `sslmode`, with libpq's meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plaintext only.
    Disable,
    /// TLS when the server offers it, the certificate not checked (libpq's default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is checked against the root certificates when
    /// some are given (as `verify-ca`), otherwise not at all.
    Require,
    /// TLS, the server's chain leads to a given root certificate.
    VerifyCa,
    /// `verify-ca`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl std::str::FromStr for SslMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        })
    }
}

/// The TLS side of a PostgreSQL connection description.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PgTls {
    pub mode: SslMode,
    /// PEM root certificates (`sslrootcert`'s contents), carried as text so a worker, which
    /// cannot read the platform's files, checks the same chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_pem: Option<String>,
    /// `sslrootcert=system`: the operating system's root certificates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system_roots: bool,
    /// The platform's client certificate and key (`sslcert`, `sslkey`), PEM. Never serialised:
    /// workers log in with their own passwords.
    #[serde(skip)]
    pub client: Option<(String, Secret)>,
}

impl PgTls {
    /// What a worker may be given: everything but the client identity.
    pub fn for_worker(&self) -> PgTls {
        PgTls {
            client: None,
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .field("root_pem", &self.root_pem.as_ref().map(|p| p.len()))
            .field("system_roots", &self.system_roots)
            .field(
                "client",
                &self.client.as_ref().map(|_| "<certificate and key>"),
            )
            .finish()
    }
}
